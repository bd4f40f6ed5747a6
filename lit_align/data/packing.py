"""Padding-free collations of preference pairs: the same ``PreferenceBatch`` type, fewer wasted tokens.

Both collators build *segments* (token runs that attend only among themselves) and pack them
first-fit-decreasing into rows no longer than the longest segment, so a packed batch never costs
more positions than the padded one, and usually far fewer rows:

- ``PackedPairCollator``: each ``prompt + chosen`` and ``prompt + rejected`` is its own segment.
- ``SharedPromptCollator``: one segment per pair, ``[prompt[:-1] | p, chosen | p, rejected]``: the
  prompt runs once for both completions. Its last token ``p`` is repeated at the head of each branch
  (same position), so the ordinary shift-by-one scoring holds: the token before each completion's
  first token is always ``p``, seeing exactly the prompt. The rejected branch never sees the chosen one.

Attention inside a row is a boolean ``(R, 1, T, T)`` mask (causal, same segment, own branch or the
shared trunk), passed to the model as a ready 4D mask; positions restart per segment. On GPUs a
varlen / flex-attention kernel would skip the masked blocks; the dense mask here is exact but still
computes them, which is why rows are never longer than the longest segment.

Everything per sequence comes from ``seq_ids`` (lit_align/logprobs.py): sums, token counts
(``PreferenceBatch.completion_counts``), epsilon-DPO mixes, and per-token log-probs, which are
regrouped into one left-aligned row per sequence (the contract of ``SequenceLogps.token_logps``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lit_align.batch import PreferenceBatch
from lit_align.data.collate import PairCollator, padding_flags
from lit_align.data.tokenize import TokenizedPair

TRUNK = 0  # prompt tokens every branch of the segment sees


@dataclass
class Segment:
    """Tokens that attend only to each other (plus per-token bookkeeping)."""

    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)  # 1 where the token is a scored completion target
    seq: list[int] = field(default_factory=list)  # logical sequence (chosen i / rejected B+i) or -1
    branch: list[int] = field(default_factory=list)  # TRUNK, or a branch id: sees TRUNK and its own branch

    def add(self, ids: list[int], start: int, scored: int | list[int], seq: int, branch: int) -> None:
        self.ids += ids
        self.positions += list(range(start, start + len(ids)))
        self.scored += scored if isinstance(scored, list) else [scored] * len(ids)
        self.seq += [seq] * len(ids)
        self.branch += [branch] * len(ids)


def pack_rows(segments: list[Segment], pad_to_multiple_of: int) -> list[list[Segment]]:
    """First-fit decreasing into rows of capacity = the longest segment (rounded up)."""
    capacity = max(len(s.ids) for s in segments)
    m = pad_to_multiple_of
    capacity = -(-capacity // m) * m if m > 1 else capacity
    rows: list[list[Segment]] = []
    room: list[int] = []
    for seg in sorted(segments, key=lambda s: -len(s.ids)):
        for i, free in enumerate(room):
            if len(seg.ids) <= free:
                rows[i].append(seg)
                room[i] -= len(seg.ids)
                break
        else:
            rows.append([seg])
            room.append(capacity - len(seg.ids))
    return rows


def segments_to_batch(rows: list[list[Segment]], pairs: list[TokenizedPair], pad_token_id: int,
                      pad_to_multiple_of: int) -> PreferenceBatch:
    length = max(sum(len(s.ids) for s in row) for row in rows)
    m = pad_to_multiple_of
    length = -(-length // m) * m if m > 1 else length
    shape = (len(rows), length)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)  # (R, T)
    attention_mask = torch.zeros(shape, dtype=torch.long)  # (R, T) 1 on real tokens
    completion_mask = torch.zeros(shape, dtype=torch.long)  # (R, T)
    position_ids = torch.zeros(shape, dtype=torch.long)  # (R, T)
    seq_ids = torch.full(shape, -1, dtype=torch.long)  # (R, T)
    segment = torch.full(shape, -1, dtype=torch.long)  # (R, T) segment number within the row, -1 padding
    branch = torch.zeros(shape, dtype=torch.long)  # (R, T)
    for r, row in enumerate(rows):
        at = 0
        for k, seg in enumerate(row):
            n = len(seg.ids)
            sl = slice(at, at + n)
            input_ids[r, sl] = torch.tensor(seg.ids)
            attention_mask[r, sl] = 1
            completion_mask[r, sl] = torch.tensor(seg.scored)
            position_ids[r, sl] = torch.tensor(seg.positions)
            seq_ids[r, sl] = torch.tensor(seg.seq)
            segment[r, sl] = k
            branch[r, sl] = torch.tensor(seg.branch)
            at += n
    q, k = segment[:, :, None], segment[:, None, :]  # (R, T, 1), (R, 1, T)
    causal = torch.ones(length, length, dtype=torch.bool).tril()  # (T, T)
    visible = (branch[:, None, :] == TRUNK) | (branch[:, None, :] == branch[:, :, None])  # (R, T, T) key's branch
    block = (q == k) & (q >= 0) & causal & visible  # (R, T, T)
    block |= torch.eye(length, dtype=torch.bool)  # padding attends to itself: no all-masked softmax (NaN)
    scores = torch.tensor([p.scores for p in pairs], dtype=torch.float32) if pairs[0].scores is not None else None
    ref = torch.tensor([p.ref_logps for p in pairs], dtype=torch.float32) if pairs[0].ref_logps is not None else None
    return PreferenceBatch(
        input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask,
        index=torch.tensor([p.index for p in pairs], dtype=torch.long), scores=scores, ref_logps=ref,
        prompt_lengths=torch.tensor([len(p.prompt_ids) for p in pairs], dtype=torch.long),
        position_ids=position_ids, block_mask=block[:, None], seq_ids=seq_ids, is_padding=padding_flags(pairs),
    )


class PackedPairCollator(PairCollator):
    """Padding-free packing: every ``prompt + completion`` sequence is a segment; rows hold several."""

    def segments(self, pairs: list[TokenizedPair]) -> list[Segment]:
        b = len(pairs)
        out = []
        for offset, pick in ((0, lambda p: p.chosen_ids), (b, lambda p: p.rejected_ids)):
            for i, p in enumerate(pairs):
                seg = Segment()
                seg.add(p.prompt_ids, 0, 0, -1, TRUNK)
                completion = pick(p)
                # With an empty prompt the first completion token has nothing inside its segment to be
                # predicted from (the padded layout cannot score it either); scoring it would read the
                # previous segment of the row.
                scored = [0] + [1] * (len(completion) - 1) if not p.prompt_ids else 1
                seg.add(completion, len(p.prompt_ids), scored, offset + i, TRUNK)
                out.append(seg)
        return out

    def __call__(self, pairs: list[TokenizedPair]) -> PreferenceBatch:
        return segments_to_batch(pack_rows(self.segments(pairs), self.pad_to_multiple_of), pairs,
                                 self.pad_token_id, self.pad_to_multiple_of)


class SharedPromptCollator(PackedPairCollator):
    """One segment per pair: the prompt computed once for chosen and rejected (then packed like above)."""

    def segments(self, pairs: list[TokenizedPair]) -> list[Segment]:
        b = len(pairs)
        out = []
        for i, p in enumerate(pairs):
            if not p.prompt_ids:  # nothing to share: the two sequences stand alone
                out += PackedPairCollator.segments(self, [p])  # seq ids 0 / 1 then remapped below
                out[-2].seq = [i if s >= 0 else -1 for s in out[-2].seq]
                out[-1].seq = [b + i if s >= 0 else -1 for s in out[-1].seq]
                continue
            last = len(p.prompt_ids) - 1
            seg = Segment()
            seg.add(p.prompt_ids[:-1], 0, 0, -1, TRUNK)
            seg.add(p.prompt_ids[-1:], last, 0, -1, 1)  # p, as the head of the chosen branch
            seg.add(p.chosen_ids, last + 1, 1, i, 1)
            seg.add(p.prompt_ids[-1:], last, 0, -1, 2)  # p again, head of the rejected branch
            seg.add(p.rejected_ids, last + 1, 1, b + i, 2)
            out.append(seg)
        return out
