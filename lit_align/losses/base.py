"""The loss interface: pure modules from log-probs to per-pair losses.

A loss never runs a model. It receives the policy's and (if it declares ``requires_reference``)
the reference's :class:`~lit_align.batch.SequenceLogps` and returns a
:class:`~lit_align.batch.LossOutput`. State that must survive a resume (a running baseline, an
adaptive beta) lives in buffers, so it is in ``state_dict`` and therefore in checkpoints.

Notation used in every docstring: ``pw, pl`` policy log-probs of chosen / rejected (sums over the
completion), ``qw, ql`` the reference's, ``rw = pw - qw``, ``rl = pl - ql``, ``D = rw - rl``,
``ls`` = logsigmoid, ``s`` = sigmoid; ``pw_bar`` = ``pw / |yw|`` (length-normalised).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_align.batch import LogpsRequest, LossOutput, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.finite import FiniteSettings


def check_positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be > 0, got {value}")
    return value


def check_non_negative(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be >= 0, got {value}")
    return value


def check_in_range(name: str, value: float, low: float, high: float, *, high_inclusive: bool = False) -> float:
    ok = math.isfinite(value) and (low <= value <= high if high_inclusive else low <= value < high)
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ConfigError(f"{name} must be in [{low}, {high}{bracket}, got {value}")
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


def logsigmoid(x: Tensor) -> Tensor:
    return F.logsigmoid(x)


def mean_nll(policy: SequenceLogps) -> Tensor:
    """Token-mean negative log-likelihood of each chosen completion, (B,)."""
    return -policy.chosen / policy.chosen_tokens.clamp(min=1)


def zeros_like_reference(policy: SequenceLogps) -> SequenceLogps:
    """A reference of log-prob 0 everywhere (the 'posterior' reference-free objective)."""
    zero = torch.zeros_like(policy.chosen)
    return SequenceLogps(zero, zero, policy.chosen_tokens, policy.rejected_tokens)


def all_reduce_sum(stats: Tensor) -> Tensor:
    """Sum a small statistics tensor over ranks when torch.distributed is running (identity otherwise)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        stats = stats.clone()
        torch.distributed.all_reduce(stats, op=torch.distributed.ReduceOp.SUM)
    return stats


class PreferenceLoss(FiniteSettings, nn.Module):
    """Base class: one algorithm per subclass, hyper-parameters in ``__init__``, tensors in ``forward``."""

    requires_reference: bool = True
    """Whether ``forward`` needs reference log-probs (checked once against the reference strategy)."""
    requires_unconditional_reference: bool = False
    """Whether the reference log-probs must be of the response alone, log p(y) (the likelihood objective)."""
    uses_rejected: bool = True
    """Whether ``forward`` reads the rejected half; False lets the module skip the rejected rows' forward."""

    @property
    def logps_request(self) -> LogpsRequest:
        """Extras this loss needs from the log-prob pass (none by default)."""
        return LogpsRequest()

    @property
    def reference_logps_request(self) -> LogpsRequest:
        """Extras this loss needs from the reference's log-prob pass (none by default)."""
        return LogpsRequest()

    @property
    def requires_reference_logits(self) -> bool:
        """True when the reference's full logits are needed every step (epsilon-DPO's mixing)."""
        return self.logps_request.mix_eps is not None

    @property
    def requires_reference_token_logps(self) -> bool:
        """True when the reference's per-token log-probs are needed, not only its sums (LD-DPO, reference_too)."""
        return self.reference_logps_request.token_logps

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def after_optimizer_step(self, applied: bool = True) -> None:
        """Hook for losses with state updated once per optimizer step (epsilon-DPO's beta).

        ``applied`` is False when the step was skipped (fp16 GradScaler, non-finite gradients): the
        policy did not move, so the state must not either; what the step's batches added is dropped.
        """

    def describe(self) -> str:
        return type(self).__name__


class LossWrapper(PreferenceLoss):
    """An option around one inner loss (WPO weighting, LD-DPO): the inner loss's needs pass through.

    Subclasses transform what goes in (log-probs) or comes out (per-pair losses) and may add to
    the requests; every requirement check made on the wrapper is the inner loss's.
    """

    def __init__(self, loss: PreferenceLoss) -> None:
        """
        Args:
            loss: The wrapped loss.
        """
        super().__init__()
        self.loss = loss

    @property
    def requires_reference(self) -> bool:  # type: ignore[override]
        return self.loss.requires_reference

    @property
    def requires_unconditional_reference(self) -> bool:  # type: ignore[override]
        return self.loss.requires_unconditional_reference

    @property
    def logps_request(self) -> LogpsRequest:
        return self.loss.logps_request

    @property
    def reference_logps_request(self) -> LogpsRequest:
        return self.loss.reference_logps_request

    def after_optimizer_step(self, applied: bool = True) -> None:
        self.loss.after_optimizer_step(applied)

    def describe(self) -> str:
        return f"{type(self).__name__}({self.loss.describe()})"


class Float64State(PreferenceLoss):
    """A stateful loss whose buffers stay float64 whatever dtype the module is cast to.

    ``Trainer(precision="bf16-true")`` casts every floating buffer to bf16, where a per-step update
    such as ``beta / (1 + 0.01 * 0.25)`` rounds to no change. Device moves still apply.
    """

    def _apply(self, fn, recurse: bool = True):
        kept = {name: buf for name, buf in self._buffers.items() if buf is not None and buf.dtype == torch.float64}
        super()._apply(fn, recurse)
        for name, old in kept.items():
            new = self._buffers[name]
            if new.dtype != torch.float64:  # a dtype cast: redo it as a pure device move of the old value
                self._buffers[name] = old.to(device=new.device)
        return self


class Divergence(FiniteSettings, nn.Module):
    """The score ``f'(u)`` of an f-divergence, applied to a log-ratio ``r = log u`` (Wang et al. 2023).

    f-DPO (arXiv 2309.16240) replaces the reverse-KL implicit reward ``beta * r`` with
    ``beta * f'(e^r)``; any pairwise loss can then be applied to the score difference.
    """

    def forward(self, log_ratio: Tensor) -> Tensor:
        raise NotImplementedError


class ReverseKL(Divergence):
    """Reverse KL, ``f(u) = u log u``: score ``r`` (DPO's own; the default everywhere)."""

    def forward(self, log_ratio: Tensor) -> Tensor:
        return log_ratio


class PairwiseLoss(PreferenceLoss):
    """A loss of the chosen and rejected scores ``sw = f'(rw)``, ``sl = f'(rl)``; subclasses define ``pair_loss``.

    With the default :class:`ReverseKL` divergence the scores are the log-ratios themselves, so
    ``pair_loss(rw, rl)`` is the formula as the papers write it. ``log_ratios`` may be overridden
    (length normalisation, reference-free objectives).
    """

    def __init__(self, beta: float = 0.1, divergence: Divergence | None = None) -> None:
        """
        Args:
            beta: Scale of the implicit reward ``beta * r``, the strength of the KL tie to the reference (0.1
                typical for DPO; 0.01-0.02 best in Liu et al. 2024, arXiv 2407.13709).
            divergence: f-divergence whose score ``f'(pi / pi_ref)`` replaces each log-ratio (f-DPO, arXiv
                2309.16240: ``ForwardKL``, ``JensenShannon``, ``AlphaDivergence``); None: reverse KL, the
                log-ratio itself.
        """
        super().__init__()
        self.beta = check_positive("beta", beta)
        self.divergence = divergence if divergence is not None else ReverseKL()

    def log_ratios(self, policy: SequenceLogps, reference: SequenceLogps | None) -> tuple[Tensor, Tensor]:
        """``(rw, rl)``, each (B,): summed policy minus reference log-probs."""
        return policy.chosen - reference.chosen, policy.rejected - reference.rejected

    def scores(self, policy: SequenceLogps, reference: SequenceLogps | None) -> tuple[Tensor, Tensor]:
        rw, rl = self.log_ratios(policy, reference)
        return self.divergence(rw), self.divergence(rl)

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        """Per-pair loss (B,) from chosen and rejected scores (B,)."""
        raise NotImplementedError

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        sw, sl = self.scores(policy, reference)  # (B,)
        return LossOutput(self.pair_loss(sw, sl), reward_metrics(self.beta, sw, sl))
