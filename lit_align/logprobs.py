"""The one place where hidden states become log-probabilities.

Used by the policy and by every reference. The full ``(2B, T, V)`` fp32 logits never exist: the
sequence is cut into chunks, and each chunk runs ``lm_head -> fp32 log-softmax -> gather`` under
activation checkpointing, so the backward pass recomputes one chunk's logits at a time instead of
keeping all of them alive. Peak extra memory is O(2B x chunk x V).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps


def unwrap_causal_lm(model: nn.Module) -> nn.Module:
    """The Hugging Face ``*ForCausalLM`` inside a PEFT wrapper (LoRA layers stay in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_fsdp2(module: nn.Module) -> bool:
    """True if ``module`` was sharded with ``fully_shard`` (it is then an FSDP2 unit)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@dataclass(frozen=True)
class FinalLogits:
    """hidden (c, H) -> the model's final logits (c, V) in fp32, as its own ``forward`` makes them.

    ``*ForCausalLM.forward`` in transformers does more than ``lm_head(hidden)`` for some families:
    Cohere multiplies by ``logit_scale``, Granite divides by ``config.logits_scaling``, Falcon-H1
    multiplies by ``lm_head_multiplier``, Gemma 2/3 soft-cap with ``tanh(x / c) * c``, some slice a
    padded vocabulary. The chunked head replaces that forward, so it must repeat the same steps, in
    the same order: ``head -> * scale -> soft-cap -> [:vocab]``. A bias in the head (Phi-2, GPT-J)
    is part of ``head(hidden)`` already. Built once per model by ``final_logits`` and checked there
    against the model's own logits, so an unexpressed post-processing fails at setup.
    """

    head: nn.Module  # the lm_head (bias included)
    scale: float = 1.0  # logits multiplied by this (1 / logits_scaling for Granite)
    softcap: float | None = None  # tanh soft-capping of the final logits (Gemma 2/3)
    vocab: int | None = None  # keep only the first ``vocab`` columns (a padded head)

    def __call__(self, hidden: Tensor) -> Tensor:
        logits = self.head(hidden).float()  # (c, V) fp32 even when the model runs in bf16
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits if self.vocab is None else logits[..., : self.vocab]


def _as_final_logits(head: nn.Module | FinalLogits) -> FinalLogits:
    """A bare ``nn.Module`` head (tests, benchmarks) has no post-processing."""
    return head if isinstance(head, FinalLogits) else FinalLogits(head)


# Config attributes whose logits_scaling MULTIPLIES (everywhere else, e.g. Granite, it divides).
_MULTIPLYING_LOGITS_SCALING = frozenset({"hyperclovax"})


def _text_config(causal_lm: nn.Module):
    config = causal_lm.config
    return getattr(config, "text_config", None) or config


def _post_processing(causal_lm: nn.Module) -> dict:
    """The transform's parameters, read from the model the way its ``forward`` reads them."""
    config = _text_config(causal_lm)
    scale = 1.0
    if getattr(causal_lm, "logit_scale", None) is not None:  # Cohere / Cohere2: self.logit_scale
        scale *= float(causal_lm.logit_scale)
    scaling = getattr(config, "logits_scaling", None)  # Granite family: logits / logits_scaling
    if scaling is not None:
        scale = scale * float(scaling) if config.model_type in _MULTIPLYING_LOGITS_SCALING else scale / float(scaling)
    base = getattr(causal_lm, "model", None)
    if getattr(base, "lm_head_multiplier", None) is not None:  # Falcon-H1: lm_head(h) * model.lm_head_multiplier
        scale *= float(base.lm_head_multiplier)
    softcap = getattr(config, "final_logit_softcapping", None) or getattr(config, "logits_soft_cap", None)
    vocab = getattr(config, "unpadded_vocab_size", None)  # Inkling: logits[..., :unpadded_vocab_size]
    return {"scale": scale, "softcap": float(softcap) if softcap else None, "vocab": vocab}


@dataclass(frozen=True)
class _Checked:
    params: dict
    packed_error: str | None  # why a packed layout would give wrong numbers; None if it is exact


_CHECKED: "weakref.WeakKeyDictionary[nn.Module, _Checked]" = weakref.WeakKeyDictionary()


def _sliding_window(config) -> int | None:
    """The smallest attention window a layer uses, or None when every layer attends to all keys."""
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return None
    types = getattr(config, "layer_types", None)
    if types is not None and not any("sliding" in t for t in types):
        return None
    return int(window)


def _relative_error(got: Tensor, want: Tensor) -> float:
    if got.shape != want.shape:
        return float("inf")
    return float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp(min=1e-6))


@torch.no_grad()
def _check(causal_lm: nn.Module) -> _Checked:
    """Once per model: the transform reproduces ``causal_lm(...).logits``, and does a packed row?

    Tiny probe forwards (eval mode, so no dropout): a plain sequence through the model's own
    forward against ``FinalLogits(decoder(...))``; and two segments packed in one row, with restarted
    positions and a block-diagonal mask, against each segment alone. A mismatch in the first raises
    now; one in the second (ALiBi built from the 2-D mask, recurrent state, ...) is recorded and raised
    only if a packed batch arrives.
    """
    config = _text_config(causal_lm)
    params = _post_processing(causal_lm)
    device = next(causal_lm.parameters()).device
    tolerance = 1e-4 if next(causal_lm.parameters()).dtype == torch.float32 else 3e-2
    vocab = int(params["vocab"] or config.vocab_size)
    ids = (torch.arange(1, 8, device=device) * 37) % vocab  # (7,) any in-vocabulary ids
    was_training = causal_lm.training
    causal_lm.eval()
    try:
        decoder, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
        if head is None:
            raise ValueError(f"{type(causal_lm).__name__} has no output embeddings (get_output_embeddings() is None)")
        transform = FinalLogits(head, **params)
        row = {"input_ids": ids[None], "attention_mask": torch.ones_like(ids)[None], "use_cache": False}
        want = causal_lm(**row).logits[0]  # (7, V)
        hidden = decoder(**row).last_hidden_state[0]  # (7, H)
        error = _relative_error(transform(hidden), want)
        if not error <= tolerance:
            raise ValueError(
                f"{type(causal_lm).__name__}: lit-align's chunked head (lm_head, then x{params['scale']:g}, "
                f"soft-cap {params['softcap']}, vocab {params['vocab']}) does not reproduce the model's own "
                f"logits (max relative error {error:.3g}); its forward post-processes logits in a way "
                "lit_align.logprobs.FinalLogits does not express"
            )
        # packed: [a0..a3 | b0..b2] in one row, positions restart, no attention across segments
        lengths = (4, 3)
        segment = torch.repeat_interleave(torch.arange(2, device=device), torch.tensor(lengths, device=device))
        causal = torch.tril(torch.ones(7, 7, dtype=torch.bool, device=device))
        block = (causal & (segment[:, None] == segment[None, :]))[None, None]  # (1, 1, 7, 7)
        positions = torch.cat([torch.arange(n, device=device) for n in lengths])[None]
        try:
            packed = decoder(input_ids=ids[None], attention_mask=_packed_mask(causal_lm, block), position_ids=positions,
                             use_cache=False).last_hidden_state[0]
            apart = torch.stack([ids[:4], torch.cat([ids[4:], ids[:1]])])  # (2, 4): b right-padded
            attention = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], device=device)
            alone_rows = decoder(input_ids=apart, attention_mask=attention, use_cache=False).last_hidden_state
            alone = torch.cat([alone_rows[0], alone_rows[1, :3]])  # (7, H) each segment on its own
            packed_error = None
            packed_diff = _relative_error(packed, alone)
            if not packed_diff <= tolerance:
                packed_error = f"segments packed in one row do not match the segments alone (relative error {packed_diff:.3g})"
        except Exception as failure:  # noqa: BLE001 - any failure means the layout is unsupported
            packed_error = f"a packed row fails to run ({type(failure).__name__}: {failure})"
    finally:
        causal_lm.train(was_training)
    return _Checked(params, packed_error)


def final_logits(model: nn.Module) -> FinalLogits:
    """The model's final-logits transform around its current lm_head (checked once per model)."""
    causal_lm = unwrap_causal_lm(model)
    checked = _checked(causal_lm)
    return FinalLogits(causal_lm.get_output_embeddings(), **checked.params)


def _checked(causal_lm: nn.Module) -> _Checked:
    if causal_lm not in _CHECKED:
        if any(p.is_meta for p in causal_lm.parameters()):  # not materialised yet: check on a later call
            return _Checked(_post_processing(causal_lm), None)
        # FSDP2: the probes cannot run on a sharded model (PreferenceModule checks before sharding)
        _CHECKED[causal_lm] = _Checked(_post_processing(causal_lm), None) if is_fsdp2(causal_lm) else _check(causal_lm)
    return _CHECKED[causal_lm]


def check_packed_layout(model: nn.Module, batch: PreferenceBatch) -> None:
    """Raise ValueError if ``model`` would score the packed ``batch`` wrongly (padded batches: no-op)."""
    if not batch.packed:
        return
    causal_lm = unwrap_causal_lm(model)
    name = type(causal_lm).__name__
    error = _checked(causal_lm).packed_error
    if error is not None:
        raise ValueError(f"{name} cannot score a packed layout: {error}; use the padded layout "
                         "(lit_align.data.collate.PairCollator) for this model")
    window = _sliding_window(_text_config(causal_lm))
    length = batch.input_ids.shape[1]
    if window is not None and length > window:  # a given 4-D mask is used as-is: the window is not applied
        raise ValueError(f"{name} attends within a sliding window of {window} tokens, which a packed row of "
                         f"{length} tokens would not apply; use the padded layout (PairCollator) or rows of at "
                         f"most {window} tokens")


def _packed_mask(causal_lm: nn.Module, block: Tensor) -> Tensor:
    """The (R, 1, T, T) block mask in the form the model's attention reads a given 4-D mask.

    transformers passes a 4-D mask through unchanged: SDPA reads a bool mask, but eager attention
    ADDS the mask to the scores, so there True/False must become 0 / the dtype's minimum.
    """
    if getattr(causal_lm.config, "_attn_implementation", None) == "sdpa":
        return block
    dtype = next(causal_lm.parameters()).dtype
    return torch.zeros(block.shape, dtype=dtype, device=block.device).masked_fill(~block, torch.finfo(dtype).min)


def hidden_states(model: nn.Module, batch: PreferenceBatch) -> tuple[Tensor, FinalLogits]:
    """Run the decoder once over all 2B rows; returns last hidden states (2B, T, H) and the final-logits head."""
    causal_lm = unwrap_causal_lm(model)
    check_packed_layout(causal_lm, batch)
    decoder = causal_lm.get_decoder()
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "use_cache": False}
    if batch.packed:  # segments attend only within themselves, positions restart per segment
        inputs.update(attention_mask=_packed_mask(causal_lm, batch.block_mask), position_ids=batch.position_ids)
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
    head = _as_final_logits(head)
    mix_head = None if mix_head is None else _as_final_logits(mix_head)
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
