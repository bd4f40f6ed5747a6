"""A model's own final logits, and the layouts it can score: checked once per model.

``lit_align.logprobs`` replaces a causal LM's ``forward`` by its decoder plus a chunked head, so it
must apply exactly what the model's forward applies after the lm_head (``FinalLogits``), and must
know when a packed row would be scored wrongly (``check_packed_layout``). Both are read from the
model and verified against its own ``model(...).logits`` on tiny probe inputs, once per model.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_align.batch import PreferenceBatch


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


def as_final_logits(head: nn.Module | FinalLogits) -> FinalLogits:
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
                "lit_align.final_logits.FinalLogits does not express"
            )
        # packed: [a0..a3 | b0..b2] in one row, positions restart, no attention across segments
        lengths = (4, 3)
        segment = torch.repeat_interleave(torch.arange(2, device=device), torch.tensor(lengths, device=device))
        causal = torch.tril(torch.ones(7, 7, dtype=torch.bool, device=device))
        block = (causal & (segment[:, None] == segment[None, :]))[None, None]  # (1, 1, 7, 7)
        positions = torch.cat([torch.arange(n, device=device) for n in lengths])[None]
        try:
            packed = decoder(input_ids=ids[None], attention_mask=packed_mask(causal_lm, block), position_ids=positions,
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


def packed_mask(causal_lm: nn.Module, block: Tensor) -> Tensor:
    """The (R, 1, T, T) block mask in the form the model's attention reads a given 4-D mask.

    transformers passes a 4-D mask through unchanged: SDPA reads a bool mask, but eager attention
    ADDS the mask to the scores, so there True/False must become 0 / the dtype's minimum.
    """
    if getattr(causal_lm.config, "_attn_implementation", None) == "sdpa":
        return block
    dtype = next(causal_lm.parameters()).dtype
    return torch.zeros(block.shape, dtype=dtype, device=block.device).masked_fill(~block, torch.finfo(dtype).min)
