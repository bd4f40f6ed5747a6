"""Collation of tokenised pairs into one padded ``PreferenceBatch`` (chosen rows, then rejected)."""

from __future__ import annotations

import torch

from lit_align.batch import PreferenceBatch
from lit_align.data.tokenize import TokenizedPair


def padding_flags(pairs: list[TokenizedPair]) -> torch.Tensor | None:
    """``PreferenceBatch.is_padding`` (B,) bool, or None when no pair is a sampler repeat."""
    flags = [p.padding for p in pairs]
    return torch.tensor(flags, dtype=torch.bool) if any(flags) else None


class PairCollator:
    """Right-pads ``prompt + completion`` rows to a common length (a multiple of ``pad_to_multiple_of``)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8) -> None:
        """
        Args:
            pad_token_id: Token id written at padding positions (masked out); the data module passes the
                tokenizer's pad id, else its EOS id.
            pad_to_multiple_of: Round padded lengths up to this multiple (fewer distinct shapes); 1: no
                rounding.
        """
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, pairs: list[TokenizedPair]) -> PreferenceBatch:
        rows = [p.prompt_ids + p.chosen_ids for p in pairs] + [p.prompt_ids + p.rejected_ids for p in pairs]
        prompt_lens = [len(p.prompt_ids) for p in pairs] * 2
        length = max(len(r) for r in rows)
        m = self.pad_to_multiple_of
        length = -(-length // m) * m if m > 1 else length
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)  # (2B, T)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)  # (2B, T)
        completion_mask = torch.zeros((len(rows), length), dtype=torch.long)  # (2B, T)
        for i, (row, p_len) in enumerate(zip(rows, prompt_lens)):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
            completion_mask[i, p_len : len(row)] = 1
        scores = torch.tensor([p.scores for p in pairs], dtype=torch.float32) if pairs[0].scores is not None else None
        ref = torch.tensor([p.ref_logps for p in pairs], dtype=torch.float32) if pairs[0].ref_logps is not None else None
        return PreferenceBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            completion_mask=completion_mask,
            index=torch.tensor([p.index for p in pairs], dtype=torch.long),
            scores=scores,
            ref_logps=ref,
            prompt_lengths=torch.tensor(prompt_lens[: len(pairs)], dtype=torch.long),
            is_padding=padding_flags(pairs),
        )
