"""Tokenisation with explicit length budgets.

Truncation policy (the same as TRL's DPOTrainer, stated here because results depend on it):
1. A prompt longer than ``max_prompt_length`` keeps its LAST ``max_prompt_length`` tokens (the
   turn nearest the answer matters most).
2. If prompt + completion is longer than ``max_length``, the completion keeps its FIRST
   ``max_length - len(prompt)`` tokens (its EOS is then cut off, as it would be at generation).
3. A pair whose two completions are identical after truncation, or one of which is empty, carries
   no preference signal and is dropped.
Each step is counted, and the counts are reported at setup.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lit_align.data.formats import TextPair
from lit_align.data.sources import DataError


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]  # completion tokens, EOS included unless truncated away
    rejected_ids: list[int]
    index: int  # position in the dataset (stable across runs for the same data)
    scores: tuple[float, float] | None = None
    ref_logps: tuple[float, float] | None = None
    padding: bool = False  # a repeat an evaluation sampler added to even out ranks (weighs 0 in metrics)


def encode(tokenizer, text: str, where: str, key: str) -> list[int]:
    """Token ids of ``text``; a tokenizer's failure on it (a character it cannot encode) names the row."""
    try:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    except Exception as err:  # noqa: BLE001 - tokenizers raise TypeError / ValueError / their own, without the row
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(f"{where}: field {key!r}: the tokenizer failed on it ({type(err).__name__}: {first[:200]})") from None


def _completion(tokenizer, text: str, where: str, key: str) -> list[int]:
    ids = encode(tokenizer, text, where, key)
    if not ids or ids[-1] != tokenizer.eos_token_id:
        ids = ids + [tokenizer.eos_token_id]
    return ids


def tokenize_pair(
    pair: TextPair, tokenizer, index: int, max_length: int, max_prompt_length: int, counts: Counter, where: str = "row"
) -> TokenizedPair | None:
    """Tokenise and truncate one pair; returns None (and counts why) when the pair must be dropped."""
    prompt = encode(tokenizer, pair.prompt, where, "prompt")
    if tokenizer.bos_token_id is not None and not (prompt and prompt[0] == tokenizer.bos_token_id):
        if getattr(tokenizer, "add_bos_token", False):
            prompt = [tokenizer.bos_token_id] + prompt
    chosen, rejected = _completion(tokenizer, pair.chosen, where, "chosen"), _completion(tokenizer, pair.rejected, where, "rejected")
    if len(prompt) > max_prompt_length:
        prompt = prompt[-max_prompt_length:]
        counts["prompt_truncated"] += 1
    budget = max_length - len(prompt)
    if len(chosen) > budget or len(rejected) > budget:
        chosen, rejected = chosen[: max(budget, 0)], rejected[: max(budget, 0)]
        counts["completion_truncated"] += 1
    if not chosen or not rejected or chosen == rejected:
        counts["dropped_after_truncation"] += 1
        return None
    return TokenizedPair(prompt, chosen, rejected, index, pair.scores, pair.ref_logps)
