"""Parsers of judge verdicts, as FastChat llm_judge and AlpacaEval parse them."""

from __future__ import annotations

import math
import re
from typing import Any

RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")


def parse_rating(judgment: str | None) -> float | None:
    """MT-Bench single grading: ``[[N]]``, falling back to ``[N]``; None when neither is there."""
    if not judgment:
        return None
    match = RATING.search(judgment) or RATING_FALLBACK.search(judgment)
    return float(match.group(1)) if match else None


def parse_pair_verdict(judgment: str | None) -> str | None:
    """MT-Bench pairwise: ``"A"``, ``"B"`` or ``"tie"`` (``[[C]]``), checked in that order; None if none."""
    if not judgment:
        return None
    for token, verdict in (("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie")):
        if token in judgment:
            return verdict
    return None


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
    """Why ``judgment`` is not a valid single-grading verdict (no rating, or outside [low, high]); None if it is."""
    rating = parse_rating(judgment)
    if rating is None:
        return "no [[rating]] in the reply"
    if not low <= rating <= high:
        return f"rating {rating:g} outside the scale [{low:g}, {high:g}]"
    return None


def pair_verdict_problem(judgment: str | None) -> str | None:
    """Why ``judgment`` is not a valid pairwise verdict ([[A]], [[B]] or [[C]]); None if it is."""
    return None if parse_pair_verdict(judgment) is not None else "no [[A]] / [[B]] / [[C]] in the reply"


def alpaca_problem(content: str | None, top_logprobs: list[dict[str, Any]] | None,
                   first: str = "m", second: str = "M") -> str | None:
    """Why a reply is not an AlpacaEval preference (neither identifier in the top log-probs nor as the content)."""
    if alpaca_preference(content, top_logprobs, first, second) is not None:
        return None
    if top_logprobs:
        return f"neither {first!r} nor {second!r} among the first token's top log-probs or as the reply"
    return f"the reply is neither {first!r} nor {second!r}"
