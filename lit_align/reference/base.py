"""The reference-policy interface.

A strategy is an ``nn.Module`` chosen in YAML by ``class_path`` and held by the LightningModule as
``module.reference``. It owns its reference models (built in ``configure``, registered as its own
submodules, frozen, in eval mode, outside the optimizer) and its state (buffers), so ``state_dict``,
checkpoints, device moves and sharding follow from the module tree: DDP ignores the frozen
weights, FSDP shards them like the policy (``lit_align.sharding``), and a checkpoint holds a moving
reference's weights and counters as ``reference.*`` entries.

The hooks take what they need explicitly (the policy, the batch, the step), never the
LightningModule. Weight updates (EMA, periodic sync) happen in ``after_optimizer_step``, which the
module calls right after a real optimizer step, before any callback can checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.finite import FiniteSettings
from lit_align.logprobs import ModelPass
from lit_align.models import ModelSource


@dataclass(frozen=True)
class ReferenceData:
    """The run's tokenised pairs, for strategies that score them ahead of training (``CachedReference``)."""

    splits: dict[str, Sequence[Any]]  # "train" / "val" -> TokenizedPair list
    collate: Callable[[list], PreferenceBatch]  # pairs -> a padded batch
    rank: int  # global rank of this process
    barrier: Callable[[], None]  # all ranks meet (a no-op in one process)


@dataclass(frozen=True)
class ReferenceContext:
    """What a strategy may know of the run it serves; handed to ``configure``."""

    policy_source: ModelSource | None  # where the policy's starting weights come from (reloadable)
    tokenizer: Any  # the policy's tokenizer
    chunk_size: int | None  # positions per lm_head chunk in the log-prob pass (lit_align.logprobs)
    data: ReferenceData | None = None  # None until a trainer with a data module is attached


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


class ReferenceStrategy(FiniteSettings, nn.Module):
    """Base class with no-op hooks; the class attributes say what the strategy can serve."""

    provides_logps: bool = True
    """Whether ``logps`` returns reference log-probs (False only for reference-free training)."""
    provides_logits: bool = True
    """Whether the strategy runs a reference model each step (needed by losses that mix logits)."""
    provides_token_logps: bool = True
    """Whether ``logps`` can honour ``LogpsRequest(token_logps=True)`` (per-token values, not only sums)."""
    scores_unconditionally: bool = False
    """Whether reference log-probs are of the response alone, without its prompt (log p(y))."""
    checkpoint_weights: bool = False
    """Whether the reference weights must be saved in checkpoints (moving references); else they are rebuilt."""

    def __init__(self) -> None:
        super().__init__()
        self.chunk_size: int | None = 1024

    def configure(self, policy: nn.Module, context: ReferenceContext) -> None:
        """Build the reference models from the policy as built (idempotent: called by every configure_model).

        Subclasses call ``super().configure`` first: it keeps the context's chunk size.
        """
        self.chunk_size = context.chunk_size

    def reference_models(self) -> list[nn.Module]:
        """The causal LMs this strategy runs (checked and sharded like the policy); none by default."""
        return []

    @torch.no_grad()
    def logps(self, policy: nn.Module, batch: PreferenceBatch, request: LogpsRequest) -> SequenceLogps | None:
        """Reference log-probs for the batch (no grad, eval mode), or None for reference-free runs.

        ``request`` is the loss's ``reference_logps_request``: usually empty; per-token values for
        LD-DPO with ``reference_too``.
        """
        return None

    @torch.no_grad()
    def model_pass(self, policy: nn.Module, batch: PreferenceBatch) -> ModelPass:
        """The reference model's decoder pass over the batch, for losses that mix its logits into the policy's."""
        raise ConfigError(f"{self.describe()} has no reference model to run")

    def after_optimizer_step(self, policy: nn.Module, step: int) -> None:
        """Called once per real optimizer step; ``step`` counts completed steps (1 after the first)."""

    def metrics(self) -> dict[str, torch.Tensor | float]:
        """The strategy's own state to log (update counts, distances, cache hits)."""
        return {}

    def train(self, mode: bool = True) -> ReferenceStrategy:
        # The flag follows the run's phase (CachedReference reads it to pick the train or val table),
        # but reference models stay in eval mode: dropout would make their log-probs noisy.
        self.training = mode
        for model in self.children():
            model.eval()
        return self

    def describe(self) -> str:
        return type(self).__name__


NEEDS = (
    # (the loss needs, the strategy provides, what is missing, what to use instead)
    ("requires_reference", "provides_logps", "needs reference log-probs but the reference is {ref}",
     "use FrozenReference (or another strategy), or a reference-free loss (SimPO, ORPO, CPO, SFT)"),
    ("requires_unconditional_reference", "scores_unconditionally",
     "compares with the reference's unconditional log p(y) but {ref} scores responses with their prompts",
     "use UnconditionalReference or CachedReference(unconditional=True)"),
    ("requires_reference_token_logps", "provides_token_logps",
     "reweights the reference's per-token log-probs, which {ref} does not keep (sums only)",
     "use FrozenReference or a moving reference, or reference_too: false"),
    ("requires_reference_logits", "provides_logits", "mixes reference logits every step, which {ref} cannot provide",
     "use FrozenReference or a moving reference"),
)
"""Each need a loss can declare, the strategy attribute that serves it, and the refusal's wording."""


def check_compatible(loss, reference: ReferenceStrategy) -> None:
    """Refuse, at construction, a loss whose needs the reference strategy cannot serve."""
    for need, provision, problem, remedy in NEEDS:
        if getattr(loss, need) and not getattr(reference, provision):
            raise ConfigError(f"{loss.describe()} {problem.format(ref=reference.describe())}: {remedy}")
