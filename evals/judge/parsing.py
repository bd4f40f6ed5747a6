"""Parsers of judge verdicts, as FastChat llm_judge and AlpacaEval parse them."""

from __future__ import annotations

import math
import re
from typing import Any

RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")
PAIR_TOKENS = (("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie"))


def _ratings(judgment: str | None) -> list[float]:
    """Every distinct rating the reply states: the ``[[N]]`` ones, else the ``[N]`` ones (FastChat's fallback)."""
    if not judgment:
        return []
    found = RATING.findall(judgment) or RATING_FALLBACK.findall(judgment)
    return sorted({float(value) for value in found})


def _pair_verdicts(judgment: str | None) -> list[str]:
    """Every distinct pairwise verdict the reply states."""
    if not judgment:
        return []
    return [verdict for token, verdict in PAIR_TOKENS if token in judgment]


# A reply that states two different verdicts (FastChat keeps the first: a judge that quotes the prompt's
# "Rating: [[5]]" example before its own [[8]] would score 5) is not a verdict: it is invalid, never
# cached, and asked again on a rerun, like a reply that states none.
def parse_rating(judgment: str | None) -> float | None:
    """MT-Bench single grading: the one rating ``[[N]]`` (else ``[N]``) states; None when none or several differ."""
    ratings = _ratings(judgment)
    return ratings[0] if len(ratings) == 1 else None


def parse_pair_verdict(judgment: str | None) -> str | None:
    """MT-Bench pairwise: ``"A"``, ``"B"`` or ``"tie"`` (``[[C]]``) when the reply states exactly one; else None."""
    verdicts = _pair_verdicts(judgment)
    return verdicts[0] if len(verdicts) == 1 else None


def alpaca_preference(content: str | None, top_logprobs: list[dict[str, Any]] | None,
                      first: str = "m", second: str = "M") -> float | None:
    """AlpacaEval preference in [1, 2] (2: the second output is better), None when unparseable.

    With logprobs (weighted_alpaca_eval_gpt4_turbo): ``p_m = exp(lp_m - logsumexp(lp_m, lp_M))``
    over the first token's top logprobs, preference ``2 - p_m``; a missing identifier has
    probability 0. Without logprobs, the discrete verdict: ``m`` -> 1, ``M`` -> 2.
    """
    if top_logprobs:
        lp = {}
        for entry in top_logprobs:
            token = entry["token"].strip()
            if token in (first, second) and token not in lp:  # the highest-ranked spelling wins
                lp[token] = entry["logprob"]
        if lp:
            lp_first = lp.get(first, -math.inf)
            lp_second = lp.get(second, -math.inf)
            top = max(lp_first, lp_second)
            if math.isfinite(top):  # both at -inf (probability 0): no preference from the log-probs, read the content
                p_first = math.exp(lp_first - top) / (math.exp(lp_first - top) + math.exp(lp_second - top))
                return 2.0 - p_first
    if content is None:
        return None
    answer = content.strip()
    if answer == first:
        return 1.0
    if answer == second:
        return 2.0
    return None


def rating_problem(judgment: str | None, low: float = 1.0, high: float = 10.0) -> str | None:
    """Why ``judgment`` is not a valid single-grading verdict (no rating, several, or outside [low, high]); None if it is."""
    ratings = _ratings(judgment)
    if not ratings:
        return "no [[rating]] in the reply"
    if len(ratings) > 1:
        return f"several different ratings in the reply ({', '.join(f'{r:g}' for r in ratings)})"
    if not low <= ratings[0] <= high:
        return f"rating {ratings[0]:g} outside the scale [{low:g}, {high:g}]"
    return None


def pair_verdict_problem(judgment: str | None) -> str | None:
    """Why ``judgment`` is not a valid pairwise verdict (exactly one of [[A]], [[B]], [[C]]); None if it is."""
    verdicts = _pair_verdicts(judgment)
    if not verdicts:
        return "no [[A]] / [[B]] / [[C]] in the reply"
    if len(verdicts) > 1:
        return f"several different verdicts in the reply ({', '.join(verdicts)})"
    return None


def alpaca_problem(content: str | None, top_logprobs: list[dict[str, Any]] | None,
                   first: str = "m", second: str = "M") -> str | None:
    """Why a reply is not an AlpacaEval preference (neither identifier in the top log-probs nor as the content)."""
    if alpaca_preference(content, top_logprobs, first, second) is not None:
        return None
    if top_logprobs:
        return f"neither {first!r} nor {second!r} among the first token's top log-probs or as the reply"
    return f"the reply is neither {first!r} nor {second!r}"
