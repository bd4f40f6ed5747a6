"""The loss interface: pure modules from log-probs to per-pair losses.

A loss never runs a model. It receives the policy's and (if it declares ``requires_reference``)
the reference's :class:`~lit_align.batch.SequenceLogps` and returns a
:class:`~lit_align.batch.LossOutput`. State that must survive a resume (a running baseline, an
adaptive beta) lives in buffers, so it is in ``state_dict`` and therefore in checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_align.batch import LogpsRequest, LossOutput, PreferenceBatch, SequenceLogps


def check_positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_in_range(name: str, value: float, low: float, high: float, *, high_inclusive: bool = False) -> float:
    ok = low <= value <= high if high_inclusive else low <= value < high
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value}")
    return value


def reward_metrics(beta: Tensor | float, chosen_ratio: Tensor, rejected_ratio: Tensor) -> dict[str, Tensor]:
    """The field's standard metrics from log-ratios ``r = log pi - log q`` (or scores), detached."""
    chosen = (beta * chosen_ratio).detach()  # (B,)
    rejected = (beta * rejected_ratio).detach()
    return {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/margins": (chosen - rejected).mean(),
        "rewards/accuracies": (chosen > rejected).float().mean(),  # strict: ties count as wrong
    }


class PreferenceLoss(nn.Module):
    """Base class: one algorithm per subclass, hyper-parameters in ``__init__``, tensors in ``forward``."""

    requires_reference: bool = True
    """Whether ``forward`` needs reference log-probs (checked once against the reference strategy)."""

    @property
    def logps_request(self) -> LogpsRequest:
        """Extras this loss needs from the log-prob pass (none by default)."""
        return LogpsRequest()

    @property
    def requires_reference_logits(self) -> bool:
        """True when the reference's full logits are needed every step (epsilon-DPO's mixing)."""
        return self.logps_request.mix_eps is not None

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def after_optimizer_step(self) -> None:
        """Hook for losses with state updated once per optimizer step (epsilon-DPO's beta)."""

    def describe(self) -> str:
        return type(self).__name__


class PairwiseLoss(PreferenceLoss):
    """A loss of the log-ratio difference ``D = (pw - qw) - (pl - ql)``; subclasses define ``pair_loss``."""

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        self.beta = check_positive("beta", beta)
        """Strength of the KL tie to the reference (0.1 typical; 0.01-0.02 best in Liu et al. 2024)."""

    def pair_loss(self, chosen_ratio: Tensor, rejected_ratio: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        rw = policy.chosen - reference.chosen  # (B,) log-ratios
        rl = policy.rejected - reference.rejected
        losses = self.pair_loss(rw, rl)
        return LossOutput(losses, reward_metrics(self.beta, rw, rl))


def logsigmoid(x: Tensor) -> Tensor:
    return F.logsigmoid(x)


def mean_nll(policy: SequenceLogps) -> Tensor:
    """Token-mean negative log-likelihood of each chosen completion, (B,)."""
    return -policy.chosen / policy.chosen_tokens.clamp(min=1)


def zeros_like_reference(policy: SequenceLogps) -> SequenceLogps:
    """A reference of log-prob 0 everywhere (the 'posterior' reference-free objective)."""
    zero = torch.zeros_like(policy.chosen)
    return SequenceLogps(zero, zero, policy.chosen_tokens, policy.rejected_tokens)
