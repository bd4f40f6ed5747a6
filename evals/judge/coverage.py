"""When judged scores are a result: every item needs a valid, in-range verdict, unless the user accepts less.

A score over the verdicts that happened to parse is not the benchmark's score (2 of 4 judged is not
"complete"), so a judged task is complete only when its coverage (items with a valid verdict / items)
reaches ``min_coverage``, 1.0 unless the user sets it lower; both numbers go into the metrics, next to
the score, so a partial score is never read as a full one.
"""

from __future__ import annotations

from typing import Any

from evals.base import EvalError


def check_min_coverage(owner: str, value: Any) -> float:
    """``value`` as a fraction in (0, 1]; anything else is refused with one line naming ``owner``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise EvalError(f"{owner}: min_coverage must be a fraction in (0, 1] (1.0: every item judged), got {value!r}")
    return float(value)


def coverage_reason(name: str, judge_model: str, responses: list, n_items: int, n_valid: int, min_coverage: float,
                    where: str) -> tuple[dict[str, Any], str | None]:
    """``({"coverage", "min_coverage"}, None)`` when the coverage is enough, else the reason it is not.

    ``responses`` are the judge's replies (``error``: never answered; ``invalid``: not a valid verdict);
    the reason says how many of each, shows one junk reply, and how to retry.
    """
    coverage = n_valid / n_items if n_items else 0.0
    metrics = {"coverage": coverage, "min_coverage": min_coverage}
    if not n_items:  # nothing judged is no score, not a complete one
        return metrics, (f"{name}: no items to judge (limit 0, or an empty question / instruction file): "
                         f"there is no score to report")
    if coverage >= min_coverage:
        return metrics, None
    unanswered = [r for r in responses if r.error is not None]
    junk = [r for r in responses if r.error is None and r.invalid is not None]
    parts = []
    if unanswered:
        parts.append(f"the judge ({judge_model}) did not answer {len(unanswered)} of {len(responses)} requests "
                     f"(last error: {unanswered[-1].error})")
    if junk:
        example = junk[0]
        parts.append(f"{len(junk)} of {len(responses)} replies are not valid verdicts (e.g. {example.invalid}: "
                     f"{_short(example.content)})")
    if not parts:
        parts.append(f"{n_items - n_valid} of {n_items} items have no valid verdict")
    return metrics, (f"{name}: {'; '.join(parts)}: coverage {coverage:.3f} < min_coverage {min_coverage:g} (see {where}). "
                     f"Only valid verdicts are cached: fix the judge (model, prompt, max_tokens) and rerun the same command "
                     f"with the same output directory to ask just the missing ones again, or set min_coverage to accept fewer")


def _short(text: str | None) -> str:
    if text is None:
        return "null content"
    text = " ".join(text.split())
    return repr(text if len(text) <= 80 else text[:77] + "...")
