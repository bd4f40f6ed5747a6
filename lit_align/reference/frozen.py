"""Static references: none at all, or a frozen model (the policy's start or another checkpoint)."""

from __future__ import annotations

import torch
from torch import nn

from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.logprobs import FinalLogits, hidden_states, sequence_logps
from lit_align.models import ModelSource
from lit_align.reference.base import ReferenceStrategy, freeze


class NoReference(ReferenceStrategy):
    """Reference-free training (SimPO, ORPO, CPO, SFT).

    Combined with a loss that needs reference log-probs, the module stops at construction.
    """

    provides_logps = False
    provides_logits = False
    provides_token_logps = False


def build_reference_model(module, source: ModelSource | None, dtype: str | None) -> nn.Module:
    """The policy's starting weights (``source`` None) or ``source``'s model, in ``dtype`` (default: the policy's).

    The result is frozen (eval mode, no grad) and on the policy's device.
    """
    from lit_align.models import resolve_dtype

    if source is None:
        model = module.initial_policy_copy(dtype)
    else:
        model = source.load_model(dtype)
        target = resolve_dtype(dtype) if dtype else next(module.policy.parameters()).dtype
        model = model.to(target)
    return freeze(model.to(next(module.policy.parameters()).device))


class FrozenReference(ReferenceStrategy):
    """A frozen copy of the policy's starting weights, or another model given by ``source``.

    Another source is a "stronger reference" (Liu et al. 2024, arXiv 2407.13709); it must share the
    policy's tokenizer (for another tokenizer, supply log-probs as dataset columns instead:
    ``DatasetColumnReference``). It is rebuilt from its source on resume, so it is not checkpointed.
    """

    key: str = "frozen"
    """Name of the reference model in ``module.references``."""

    def __init__(self, source: ModelSource | None = None, dtype: str | None = None) -> None:
        """
        Args:
            source: A ModelSource for the reference; None copies the policy at the start of training.
            dtype: Dtype of the reference weights (default: the policy's).
        """
        self.source = source
        self.dtype = dtype

    def build(self, module) -> nn.Module:
        return build_reference_model(module, self.source, self.dtype)

    def configure(self, module) -> None:
        if self.key not in module.references:
            module.references[self.key] = self.build(module)

    def model(self, module) -> nn.Module:
        return module.references[self.key]

    @torch.no_grad()
    def logps(self, module, batch: PreferenceBatch, request: LogpsRequest) -> SequenceLogps:
        return sequence_logps(self.model(module), batch, request, module.logps_chunk_size)

    @torch.no_grad()
    def hidden_states(self, module, batch: PreferenceBatch) -> tuple[torch.Tensor, FinalLogits]:
        return hidden_states(self.model(module), batch)

    def describe(self) -> str:
        where = "the policy's start" if self.source is None else type(self.source).__name__
        return f"{type(self).__name__}({where})"
