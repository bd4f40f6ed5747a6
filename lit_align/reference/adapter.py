"""Adapter-disabled reference: for a PEFT (LoRA) policy, the reference is the same network without
the trained adapter, so no second copy of the base weights exists.

- Fresh adapter: the reference is the base model (``policy.disable_adapter()``).
- Continued adapter (``LoraSource.adapter_path``): the reference is that adapter as loaded, frozen,
  not the bare base. Only the adapter's starting weights are kept (adapter-sized, not model-sized);
  for the reference pass they are copied into the adapter's parameters and the trained values are
  copied back right after. The copies go through ``.data`` under no_grad so they do not count as
  in-place changes to tensors the policy's pending backward saved; the values are restored exactly
  before that backward runs.

The policy is put in eval mode for the reference pass (no dropout) and restored after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.logprobs import ModelPass, run_model, sequence_logps
from lit_align.reference.base import ReferenceContext, ReferenceStrategy


class AdapterDisabledReference(ReferenceStrategy):
    """The PEFT policy with its adapter switched off (or held at its loaded weights) as the reference."""

    def __init__(self, keep_initial_adapter: bool | None = None) -> None:
        """
        Args:
            keep_initial_adapter: Reference = the adapter as loaded (True) or no adapter (False); null: True iff
                the policy continues an existing adapter (``LoraSource.adapter_path``).
        """
        super().__init__()
        self.keep_initial_adapter = keep_initial_adapter
        self.initial: dict[str, torch.Tensor] | None = None
        """The adapter's starting weights (only when keeping the initial adapter); rebuilt, not checkpointed."""

    def configure(self, policy: nn.Module, context: ReferenceContext) -> None:
        super().configure(policy, context)
        if not hasattr(policy, "disable_adapter"):
            raise ConfigError(
                "AdapterDisabledReference needs a PEFT policy: set model to lit_align.peft_config.LoraSource "
                "(or use FrozenReference)"
            )
        keep = self.keep_initial_adapter
        if keep is None:
            keep = bool(getattr(context.policy_source, "adapter_path", None))
        if keep and self.initial is None:  # configure_model runs before a checkpoint is restored: these are the start
            self.initial = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}

    @contextmanager
    def as_reference(self, policy: nn.Module) -> Iterator[nn.Module]:
        """Within the block, ``policy`` computes the reference (eval mode, no grad)."""
        was_training = policy.training
        policy.eval()
        try:
            with torch.no_grad():
                if self.initial is None:
                    with policy.disable_adapter():
                        yield policy
                else:
                    params = dict(policy.named_parameters())
                    trained = {n: params[n].data.clone() for n in self.initial}
                    for n, value in self.initial.items():
                        params[n].data.copy_(value)
                    try:
                        yield policy
                    finally:
                        for n, value in trained.items():
                            params[n].data.copy_(value)
        finally:
            policy.train(was_training)

    @torch.no_grad()
    def logps(self, policy: nn.Module, batch: PreferenceBatch, request: LogpsRequest) -> SequenceLogps:
        with self.as_reference(policy) as model:
            return sequence_logps(model, batch, request, self.chunk_size)

    @torch.no_grad()
    def model_pass(self, policy: nn.Module, batch: PreferenceBatch) -> ModelPass:
        with self.as_reference(policy) as model:  # the head is shared with the policy (never adapted by all-linear)
            return run_model(model, batch)

    def describe(self) -> str:
        return f"AdapterDisabledReference(keep_initial_adapter={self.keep_initial_adapter})"
