"""The one place where hidden states become log-probabilities.

Used by the policy and by every reference. The full ``(2B, T, V)`` fp32 logits never exist: the
sequence is cut into chunks, and each chunk runs ``lm_head -> fp32 log-softmax -> gather`` under
activation checkpointing, so the backward pass recomputes one chunk's logits at a time instead of
keeping all of them alive. Peak extra memory is O(2B x chunk x V). The head applies the model's
own final-logits transform (``lit_align.final_logits``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.final_logits import (
    FinalLogits, as_final_logits, check_packed_layout, final_logits, is_fsdp2, packed_mask, unwrap_causal_lm,
)


def hidden_states(model: nn.Module, batch: PreferenceBatch) -> tuple[Tensor, FinalLogits]:
    """Run the decoder once over all 2B rows; returns last hidden states (2B, T, H) and the final-logits head."""
    causal_lm = unwrap_causal_lm(model)
    check_packed_layout(causal_lm, batch)
    decoder = causal_lm.get_decoder()
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "use_cache": False}
    if batch.packed:  # segments attend only within themselves, positions restart per segment
        inputs.update(attention_mask=packed_mask(causal_lm, batch.block_mask), position_ids=batch.position_ids)
    if not is_fsdp2(causal_lm):
        return decoder(**inputs).last_hidden_state, final_logits(causal_lm)
    # FSDP2 (lit_align/sharding.py): the causal LM is the root unit, and its hooks (unshard the
    # embeddings / norm / head, set up the backward reduce-scatter) fire only when IT is called. So
    # call it with no logits kept and take the decoder's output from a forward hook.
    captured: list[Tensor] = []
    handle = decoder.register_forward_hook(lambda module, args, out: captured.append(out.last_hidden_state))
    try:
        causal_lm(**inputs, logits_to_keep=torch.empty(0, dtype=torch.long, device=batch.input_ids.device))
    finally:
        handle.remove()
    causal_lm.unshard()  # the chunked head runs after the root's forward; a no-grad root has resharded
    return captured[0], final_logits(causal_lm)


def _chunk_token_logps(head: FinalLogits, hidden: Tensor, targets: Tensor,
                       sum_sq: bool = False) -> tuple[Tensor, Tensor | None]:
    """(c,) log-probs of the targets and, for WPO only, (c,) ``log sum_v p_v^2`` from the same logits."""
    logp = F.log_softmax(head(hidden), dim=-1)  # (c, V)
    token = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (c,)
    return token, torch.logsumexp(2 * logp.detach(), dim=-1) if sum_sq else None


def chunked_logps(
    hidden: Tensor,
    head: FinalLogits | nn.Module,
    batch: PreferenceBatch,
    request: LogpsRequest = LogpsRequest(),
    chunk_size: int | None = 1024,
    mix_hidden: Tensor | None = None,
    mix_head: FinalLogits | nn.Module | None = None,
) -> SequenceLogps:
    """Summed completion log-probs from hidden states, the head run on scored positions only.

    Position ``t`` of ``hidden`` predicts token ``t + 1``; only positions whose target is a
    completion token are gathered and sent through the head (prompt and padding positions cost
    nothing there), ``chunk_size`` of them at a time, each chunk recomputed in backward so the
    (chunk, V) logits never stay alive. ``head`` is the model's ``FinalLogits`` (from
    ``hidden_states``), so scaling and soft-capping apply on every path; a bare ``nn.Module`` is a head
    without post-processing. ``mix_hidden``/``mix_head`` (the reference's, no grad) are needed only
    for ``request.mix_eps``.
    """
    head = as_final_logits(head)
    mix_head = None if mix_head is None else as_final_logits(mix_head)
    rows, length, _ = hidden.shape  # (R, T, H); R = 2B rows padded, fewer packed
    n = 2 * batch.num_pairs  # sequences
    mask = batch.target_mask  # (R, T-1)
    seq = batch.seq_ids[:, 1:] if batch.packed else None  # (R, T-1) sequence of each target (packed)
    if request.mix_eps and mix_hidden is None:
        raise ValueError("an epsilon mix was requested but no reference hidden states were given")
    if not batch.has_rejected_rows and request != LogpsRequest():
        raise ValueError("a chosen-only batch gives plain sums: the extras requested need both halves")

    where = mask.nonzero(as_tuple=True)  # ((S,), (S,)): row and position of each scored target
    scored = hidden[:, :-1][where]  # (S, H)
    mix_scored = mix_hidden[:, :-1][where] if request.mix_eps else None  # (S, H), no grad
    targets = batch.input_ids[:, 1:][where]  # (S,)
    total = targets.shape[0]
    # chunk_size None: every scored position at once and no recomputation (the usual way, for comparison)
    step = max(chunk_size or total, 1)
    pieces, lss_pieces = [], []
    mixed_pieces: dict[int, list[Tensor]] = {-1: [], 1: []}
    for start in range(0, total, step):
        h = scored[start : start + step]  # (c, H)
        t = targets[start : start + step]  # (c,)
        if chunk_size and torch.is_grad_enabled() and h.requires_grad:
            tok, lss = checkpoint(_chunk_token_logps, head, h, t, request.sum_sq_probs, use_reentrant=False)
        else:
            tok, lss = _chunk_token_logps(head, h, t, request.sum_sq_probs)
        pieces.append(tok)
        if lss is not None:
            lss_pieces.append(lss)
        if request.mix_eps:
            with torch.no_grad():
                f = head(h.detach())  # (c, V) final logits of each model
                g = mix_head(mix_scored[start : start + step])
                for sign in (-1, 1):  # -1: (1+eps) f - eps g ; +1: (1-eps) f + eps g
                    mix = (1 - sign * request.mix_eps) * f + sign * request.mix_eps * g
                    mixed_pieces[sign].append(F.log_softmax(mix, dim=-1).gather(-1, t.unsqueeze(-1)).squeeze(-1))

    def dense(pieces: list[Tensor]) -> Tensor:
        """(R, T-1): per-target values put back at their positions, exactly 0 elsewhere (out-of-place)."""
        values = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
        return hidden.new_zeros(rows, length - 1, dtype=torch.float32).index_put(where, values)

    token_logps = dense(pieces)  # (R, T-1)
    log_sum_sq = dense(lss_pieces) if request.sum_sq_probs else None
    mixed = {sign: _per_sequence(dense(mixed_pieces[sign]), mask, seq, n) for sign in (-1, 1)} if request.mix_eps else None
    sums = _per_sequence(token_logps, mask, seq, n)  # (2B,); (B,) for a chosen-only batch
    counts = batch.completion_counts()  # (2B,); (B,) for a chosen-only batch
    if not batch.has_rejected_rows:  # chosen_only: the rejected half reads as NaN, with 0 tokens
        sums = torch.cat([sums, torch.full_like(sums, float("nan"))])
        counts = torch.cat([counts, torch.zeros_like(counts)])
    half = n // 2
    out = SequenceLogps(
        chosen=sums[:half], rejected=sums[half:], chosen_tokens=counts[:half], rejected_tokens=counts[half:]
    )
    if request.token_logps:
        out.token_logps, out.token_mask = (token_logps, mask) if seq is None else _left_aligned(token_logps, mask, seq, counts)
    if log_sum_sq is not None:
        out.mean_log_sum_sq_probs = _per_sequence(log_sum_sq, mask, seq, n) / counts.clamp(min=1)
    if mixed is not None:
        out.mixed_minus, out.mixed_plus = mixed[-1], mixed[1]
    return out


def _per_sequence(values: Tensor, mask: Tensor, seq: Tensor | None, n: int) -> Tensor:
    """(n,) sums of ``values`` (R, c) over the scored targets ``mask`` (R, c) of each sequence.

    Padded (``seq`` None): a row is a sequence, so a row sum. Packed: each target adds into the slot
    of its sequence ``seq`` (R, c); out-of-place, so gradients flow back to ``values``.
    """
    if seq is None:
        return (values * mask).sum(-1)  # (R,) = (n,)
    return values.new_zeros(n).index_add(0, seq[mask], values[mask])  # (n,)


def _left_aligned(token_logps: Tensor, mask: Tensor, seq: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """A packed layout's per-token log-probs (R, T-1) regrouped as (2B, L) rows, one per sequence.

    Row s holds sequence s's scored targets in order from column 0 (L = longest completion), the
    mask is True exactly there: the layout contract of ``SequenceLogps.token_logps``. Boolean
    indexing reads targets row-major, and a sequence lies in one row with its tokens in order, so a
    stable sort by sequence keeps each sequence's targets in order; a target's column is then its
    rank within its sequence.
    """
    n = counts.shape[0]
    seq_of = seq[mask]  # (S,) sequence of each scored target
    order = torch.sort(seq_of, stable=True).indices  # (S,) targets grouped by sequence, in order
    starts = torch.cumsum(counts, 0) - counts  # (n,) where each sequence's group begins in `order`
    ranks = torch.arange(seq_of.numel(), device=seq_of.device) - starts[seq_of[order]]  # (S,) in sorted order
    column = torch.empty_like(seq_of).scatter(0, order, ranks)  # (S,) back to target order
    width = int(counts.max()) if n else 0
    where = (seq_of, column)
    values = token_logps.new_zeros(n, width).index_put(where, token_logps[mask])  # (2B, L); out-of-place
    present = torch.zeros(n, width, dtype=torch.bool, device=mask.device).index_put(where, torch.ones_like(seq_of, dtype=torch.bool))
    return values, present


@dataclass
class ModelPass:
    """One decoder forward of a model over a batch: every log-prob in lit-align is computed from one.

    The policy's and every reference's log-probs come from ``ModelPass.logps``; epsilon-DPO hands the
    reference's pass to the policy's (``mix``), so the two models' logits meet inside one chunk loop.
    """

    model: nn.Module  # the causal LM that ran (PEFT wrapper removed)
    hidden: Tensor  # (R, T, H) last hidden states
    head: FinalLogits  # hidden -> the model's final logits

    def logps(self, batch: PreferenceBatch, request: LogpsRequest = LogpsRequest(), chunk_size: int | None = 1024,
              mix: ModelPass | None = None) -> SequenceLogps:
        """Summed completion log-probs (``chunked_logps``); ``mix`` is the reference pass for ``request.mix_eps``."""
        return chunked_logps(self.hidden, self.head, batch, request, chunk_size,
                             mix_hidden=None if mix is None else mix.hidden, mix_head=None if mix is None else mix.head)

    def release(self) -> None:
        """After a no-grad pass: free an FSDP2 root's gathered weights (no backward will need them)."""
        if not torch.is_grad_enabled() and is_fsdp2(self.model):
            self.model.reshard()


def run_model(model: nn.Module, batch: PreferenceBatch) -> ModelPass:
    """The decoder forward of ``model`` (a causal LM, PEFT-wrapped or not) over all rows of the batch."""
    hidden, head = hidden_states(model, batch)
    return ModelPass(unwrap_causal_lm(model), hidden, head)


def sequence_logps(
    model: nn.Module, batch: PreferenceBatch, request: LogpsRequest = LogpsRequest(), chunk_size: int | None = 1024
) -> SequenceLogps:
    """One forward of ``model`` over the batch, then chunked log-probs (the common case)."""
    forward = run_model(model, batch)
    out = forward.logps(batch, request, chunk_size)
    forward.release()  # a reference's root weights are gathered again on its next forward
    return out
