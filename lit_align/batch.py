"""The three types that flow through a training step.

``PreferenceBatch`` -> (policy and reference) ``SequenceLogps`` -> loss -> ``LossOutput``.
Rows are laid out for ONE concatenated forward: rows ``[0, B)`` are the chosen sequences and rows
``[B, 2B)`` the rejected ones, each ``prompt + completion`` and right-padded. A packed layout is the
same type with ``position_ids`` / ``block_mask`` / ``seq_ids`` set; log-probs come out as the same
``(B,)`` sums, so losses never see the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor


@dataclass
class PreferenceBatch:
    """A collated batch of preference pairs (mutable: Lightning moves it between devices)."""

    input_ids: Tensor  # (2B, T) long; chosen rows first, then rejected
    attention_mask: Tensor  # (2B, T) 1 on real tokens, 0 on padding
    completion_mask: Tensor  # (2B, T) 1 on completion tokens (the scored targets), else 0
    index: Tensor  # (B,) long; dataset row of each pair, for caches and per-example state
    scores: Tensor | None = None  # (B, 2) float; per-pair (chosen, rejected) scores, e.g. for ODPO
    ref_logps: Tensor | None = None  # (B, 2) float; precomputed reference log-probs (chosen, rejected)
    prompt_lengths: Tensor | None = None  # (B,) long; prompt tokens of each pair (unconditional scoring)
    # Packed layouts (lit_align/data/packing.py): R rows that each hold several sequences, or one
    # [prompt, chosen, rejected] row per pair. Absent for the padded layout (rows = 2B sequences).
    position_ids: Tensor | None = None  # (R, T) long; positions restart at each sequence
    block_mask: Tensor | None = None  # (R, 1, T, T) bool; True where query t may attend key s
    seq_ids: Tensor | None = None  # (R, T) long; sequence of each token: pair i chosen i, rejected B+i; -1 none
    # Evaluation loaders only: pairs the distributed sampler repeated so that every rank runs the same
    # number of batches (FSDP forwards are collectives). They run through the forward like any pair
    # and weigh 0 in validation metrics. None when the batch holds no such pair.
    is_padding: Tensor | None = None  # (B,) bool; True on a repeated pair

    @property
    def packed(self) -> bool:
        """True for a packed / prompt-shared layout (per-sequence sums come from ``seq_ids``)."""
        return self.seq_ids is not None

    @property
    def num_pairs(self) -> int:
        return self.index.shape[0]

    def chosen_only(self) -> PreferenceBatch:
        """The B chosen rows alone, trimmed to the longest of them (padded layout only).

        For losses that never read the rejected half (SFT alone): the forward then costs half.
        Log-probs of such a batch report NaN rejected sums, so a loss that did read them fails
        loudly instead of training on zeros.
        """
        if self.packed:
            raise ValueError("chosen_only needs the padded layout (PairCollator)")
        b = self.num_pairs
        length = int(self.attention_mask[:b].sum(-1).max())  # right-padded: real tokens come first
        rows = {name: getattr(self, name)[:b, :length] for name in ("input_ids", "attention_mask", "completion_mask")}
        return replace(self, **rows)

    @property
    def has_rejected_rows(self) -> bool:
        """False for a ``chosen_only`` batch (rows = B, not 2B)."""
        return self.packed or self.input_ids.shape[0] == 2 * self.num_pairs

    @property
    def target_mask(self) -> Tensor:
        """(R, T-1) bool: position t's target (token t+1) is a scored completion token."""
        return self.completion_mask[:, 1:].to(torch.bool)

    def completion_counts(self) -> Tensor:
        """(2B,) long scored completion tokens per sequence (chosen 0..B-1, rejected B..2B-1).

        A padded row is one sequence; a packed row holds several (or a whole pair), so there each
        scored target counts for its ``seq_ids`` entry. The log-prob pass and the references that
        serve stored log-probs both count here, so token counts always agree.
        """
        mask = self.target_mask  # (R, T-1)
        if not self.packed:
            return mask.sum(-1)  # (2B,)
        seq = self.seq_ids[:, 1:][mask]  # (S,) sequence of each scored target
        counts = torch.zeros(2 * self.num_pairs, dtype=torch.long, device=seq.device)
        return counts.index_add(0, seq, torch.ones_like(seq))  # (2B,)

    @property
    def has_padding(self) -> bool:
        """True when some pairs are sampler repeats (see ``is_padding``)."""
        return self.is_padding is not None and bool(self.is_padding.any())

    def select_pairs(self, keep: Tensor) -> PreferenceBatch:
        """The batch restricted to the pairs where ``keep`` (B,) bool is True, in their order.

        Padded layout: rows ``keep`` of each half. Packed layout: rows hold several sequences, so
        every row stays; the kept sequences are renumbered (pair ``j`` of the result: chosen ``j``,
        rejected ``B' + j``) and the dropped ones lose their scored tokens. Either way the kept pairs'
        log-probs are those of the full batch (attention is unchanged within each sequence).
        """
        keep = keep.to(device=self.index.device, dtype=torch.bool)
        per_pair = {
            name: None if value is None else value[keep]
            for name, value in (("index", self.index), ("scores", self.scores), ("ref_logps", self.ref_logps),
                                ("prompt_lengths", self.prompt_lengths), ("is_padding", self.is_padding))
        }
        if not self.packed:
            rows = torch.cat([keep, keep])  # (2B,) chosen half, then rejected half
            return replace(self, input_ids=self.input_ids[rows], attention_mask=self.attention_mask[rows],
                           completion_mask=self.completion_mask[rows], **per_pair)
        kept = int(keep.sum())
        new_pair = torch.cumsum(keep.long(), 0) - 1  # (B,) position of each kept pair in the result
        remap = torch.full((2 * self.num_pairs,), -1, dtype=torch.long, device=keep.device)  # (2B,) old -> new sequence
        remap[: self.num_pairs][keep] = new_pair[keep]
        remap[self.num_pairs :][keep] = kept + new_pair[keep]
        seq_ids = torch.where(self.seq_ids >= 0, remap[self.seq_ids.clamp(min=0)], -1)  # (R, T)
        completion_mask = self.completion_mask * (seq_ids >= 0).to(self.completion_mask.dtype)
        return replace(self, completion_mask=completion_mask, seq_ids=seq_ids, **per_pair)

    def to(self, device: torch.device | str) -> PreferenceBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in moved.items()}
        return replace(self, **moved)


@dataclass(frozen=True)
class LogpsRequest:
    """Extra per-sequence quantities a loss asks of the log-prob pass.

    They are computed inside the same chunk loop as the log-probs, so asking costs no extra
    forward pass and no full-logits tensor. Requests of a composite loss are merged with ``|``.
    """

    token_logps: bool = False  # keep per-token log-probs per sequence (LD-DPO; see SequenceLogps.token_logps)
    sum_sq_probs: bool = False  # WPO: per-sequence mean of log sum_v p_v^2 over completion tokens
    mix_eps: float | None = None  # epsilon-DPO: log-probs under (1 -/+ eps) f +/- eps g (needs g)

    def __or__(self, other: LogpsRequest) -> LogpsRequest:
        if self.mix_eps is not None and other.mix_eps is not None and self.mix_eps != other.mix_eps:
            raise ValueError(f"two losses ask for different epsilon mixes: {self.mix_eps} and {other.mix_eps}")
        return LogpsRequest(
            token_logps=self.token_logps or other.token_logps,
            sum_sq_probs=self.sum_sq_probs or other.sum_sq_probs,
            mix_eps=self.mix_eps if self.mix_eps is not None else other.mix_eps,
        )


@dataclass
class SequenceLogps:
    """Per-sequence summed completion log-probs for the chosen and rejected halves of a batch."""

    chosen: Tensor  # (B,) sum of log p(y_w | x) over completion tokens
    rejected: Tensor  # (B,)
    chosen_tokens: Tensor  # (B,) completion token counts |y_w|
    rejected_tokens: Tensor  # (B,)
    # Optional extras, filled only when a LogpsRequest asked for them.
    # Per-token log-probs, (2B, L). The contract a loss may rely on: row s is sequence s (chosen
    # 0..B-1, rejected B..2B-1); token_mask is True on exactly its scored completion targets, in
    # their order along the row (so a cumsum of the mask numbers them 1, 2, ...); token_logps holds
    # their log-probs there and 0 elsewhere (so row sums are the sequence sums). Width L and where
    # the completion sits in the row depend on the layout, so nothing else may be assumed: padded,
    # L = T-1 and each target stays at its own position (after the prompt); packed, the targets are
    # left-aligned and L is the longest completion of the batch.
    token_logps: Tensor | None = None  # (2B, L) float, zero outside the completion
    token_mask: Tensor | None = None  # (2B, L) bool, True on the completion targets
    mean_log_sum_sq_probs: Tensor | None = None  # (2B,) WPO statistic
    mixed_minus: Tensor | None = None  # (2B,) sums under (1+eps) f - eps g  (stands for beta/(1+eps))
    mixed_plus: Tensor | None = None  # (2B,) sums under (1-eps) f + eps g  (stands for beta/(1-eps))
    extras: dict[str, Tensor] = field(default_factory=dict)

    def select_pairs(self, keep: Tensor) -> SequenceLogps:
        """The values of the pairs where ``keep`` (B,) bool is True (see ``PreferenceBatch.select_pairs``)."""
        if self.extras:
            raise ValueError(f"cannot select pairs of extras of unknown layout: {sorted(self.extras)}")
        keep = keep.to(device=self.chosen.device, dtype=torch.bool)
        rows = torch.cat([keep, keep])  # (2B,) for the fields laid out as chosen half, then rejected half

        def pick(value: Tensor | None, mask: Tensor) -> Tensor | None:
            return None if value is None else value[mask]

        return SequenceLogps(
            chosen=self.chosen[keep], rejected=self.rejected[keep],
            chosen_tokens=self.chosen_tokens[keep], rejected_tokens=self.rejected_tokens[keep],
            token_logps=pick(self.token_logps, rows), token_mask=pick(self.token_mask, rows),
            mean_log_sum_sq_probs=pick(self.mean_log_sum_sq_probs, rows),
            mixed_minus=pick(self.mixed_minus, rows), mixed_plus=pick(self.mixed_plus, rows),
        )

    @property
    def chosen_mean(self) -> Tensor:
        """Length-normalised log-probs (SimPO, ORPO, IPO)."""
        return self.chosen / self.chosen_tokens.clamp(min=1)

    @property
    def rejected_mean(self) -> Tensor:
        return self.rejected / self.rejected_tokens.clamp(min=1)


@dataclass
class LossOutput:
    """Per-pair losses and detached scalar metrics."""

    losses: Tensor  # (B,)
    metrics: dict[str, Tensor] = field(default_factory=dict)  # name -> detached scalar (or (B,) to be averaged)
