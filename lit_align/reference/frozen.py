"""Static references: none at all, or a frozen model (the policy's start or another checkpoint)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.logprobs import ModelPass, run_model, sequence_logps, unwrap_causal_lm
from lit_align.models import ModelSource, resolve_dtype
from lit_align.reference.base import ReferenceContext, ReferenceStrategy, freeze


class NoReference(ReferenceStrategy):
    """Reference-free training (SimPO, ORPO, CPO, SFT).

    Combined with a loss that needs reference log-probs, the module stops at construction.
    """

    provides_logps = False
    provides_logits = False
    provides_token_logps = False


def build_reference_model(policy: nn.Module, source: ModelSource | None, dtype: str | None) -> nn.Module:
    """A frozen copy of ``policy`` as it is now (``source`` None) or ``source``'s model, in ``dtype``.

    ``dtype`` None keeps the policy's. The result is in eval mode, without grad, on the policy's device.
    """
    if source is None:
        model = copy.deepcopy(unwrap_causal_lm(policy))
        if getattr(model, "is_activation_checkpointing", False):  # a no-grad model has nothing to recompute
            model.activation_checkpointing_disable()
        if dtype:
            model = model.to(resolve_dtype(dtype))
    else:
        model = source.load_model(dtype)
        model = model.to(resolve_dtype(dtype) if dtype else next(policy.parameters()).dtype)
    return freeze(model.to(next(policy.parameters()).device))


class FrozenReference(ReferenceStrategy):
    """A frozen copy of the policy's starting weights, or another model given by ``source``.

    Another source is a "stronger reference" (Liu et al. 2024, arXiv 2407.13709); it must share the
    policy's tokenizer (for another tokenizer, supply log-probs as dataset columns instead:
    ``DatasetColumnReference``). It is rebuilt from its source on resume, so it is not checkpointed.
    """

    def __init__(self, source: ModelSource | None = None, dtype: str | None = None) -> None:
        """
        Args:
            source: A ModelSource for the reference; None copies the policy at the start of training.
            dtype: Dtype of the reference weights (default: the policy's).
        """
        super().__init__()
        self.source = source
        self.dtype = dtype
        self.model: nn.Module | None = None
        """The reference model, built by ``configure`` (before any checkpoint is restored: the policy's start)."""

    def configure(self, policy: nn.Module, context: ReferenceContext) -> None:
        super().configure(policy, context)
        if self.model is None:
            self.model = build_reference_model(policy, self.source, self.dtype)

    def reference_models(self) -> list[nn.Module]:
        return [] if self.model is None else [self.model]

    @torch.no_grad()
    def logps(self, policy: nn.Module, batch: PreferenceBatch, request: LogpsRequest) -> SequenceLogps:
        return sequence_logps(self.model, batch, request, self.chunk_size)

    @torch.no_grad()
    def model_pass(self, policy: nn.Module, batch: PreferenceBatch) -> ModelPass:
        return run_model(self.model, batch)

    def describe(self) -> str:
        where = "the policy's start" if self.source is None else type(self.source).__name__
        return f"{type(self).__name__}({where})"
