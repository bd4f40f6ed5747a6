"""The reference-policy interface.

A strategy is a plain object chosen in YAML by ``class_path``. It builds its reference model(s)
in ``configure`` as submodules of the LightningModule (under ``module.references``), frozen, in
eval mode and outside the optimizer: DDP then ignores them and FSDP shards them like the policy.
Weight updates (EMA, periodic sync) happen in ``after_optimizer_step``, which the module calls
right after a real optimizer step, before any callback can checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.logprobs import FinalLogits


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


class ReferenceStrategy:
    """Base class with no-op hooks."""

    provides_logps: bool = True
    """Whether ``logps`` returns reference log-probs (False only for reference-free training)."""
    provides_logits: bool = True
    """Whether the strategy runs a reference model each step (needed by losses that mix logits)."""
    provides_token_logps: bool = True
    """Whether ``logps`` can honour ``LogpsRequest(token_logps=True)`` (per-token values, not only sums)."""
    scores_unconditionally: bool = False
    """Whether reference log-probs are of the response alone, without its prompt (log p(y))."""
    checkpoint_weights: bool = False
    """Whether reference weights must be saved in checkpoints (moving references)."""

    def configure(self, module) -> None:
        """Build reference models on ``module.references`` (idempotent: called by configure_model)."""

    @torch.no_grad()
    def logps(self, module, batch: PreferenceBatch, request: LogpsRequest) -> SequenceLogps | None:
        """Reference log-probs for the batch (no grad, eval mode), or None for reference-free runs.

        ``request`` is the loss's ``reference_logps_request``: usually empty; per-token values for
        LD-DPO with ``reference_too``.
        """
        return None

    @torch.no_grad()
    def hidden_states(self, module, batch: PreferenceBatch) -> tuple[torch.Tensor, FinalLogits]:
        """The reference's last hidden states (2B, T, H) and lm_head, for losses that mix logits."""
        raise ConfigError(f"{self.describe()} has no reference model to run")

    def after_optimizer_step(self, module, step: int) -> None:
        """Called once per real optimizer step; ``step`` counts completed steps (1 after the first)."""

    def metrics(self, module) -> dict[str, float]:
        """The strategy's own state to log (update counts, distances, cache hits)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def describe(self) -> str:
        return type(self).__name__
