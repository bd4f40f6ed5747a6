"""ORPO: SFT plus an odds-ratio preference term, no reference."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.batch import LossOutput, PreferenceBatch, SequenceLogps
from lit_align.losses.base import PreferenceLoss, check_non_negative, logsigmoid, mean_nll, reward_metrics


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - e^x)`` for ``x < 0``, accurate on both sides of ``-log 2``."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class ORPO(PreferenceLoss):
    """ORPO, Hong et al. 2024 (arXiv 2403.07691): ``L = NLL_w - lam * ls(log_odds)``.

    ``log_odds = (pw_bar - pl_bar) - (log(1 - e^pw_bar) - log(1 - e^pl_bar))``, the log odds ratio
    of the length-normalised chosen and rejected likelihoods; ``NLL_w`` is the chosen's token-mean
    NLL. Rewards are reported as ``lam * pw_bar`` (as TRL does).
    """

    requires_reference = False

    def __init__(self, lam: float = 0.1) -> None:
        """
        Args:
            lam: Weight of the odds-ratio term (0.1 in the paper; TRL calls it beta).
        """
        super().__init__()
        self.lam = check_non_negative("lam", lam)

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        pw, pl = policy.chosen_mean, policy.rejected_mean  # (B,) mean token log-probs, < 0
        log_odds = (pw - pl) - (log1mexp(pw) - log1mexp(pl))
        ratio = logsigmoid(log_odds)
        nll = mean_nll(policy)
        metrics = reward_metrics(self.lam, pw, pl)
        metrics.update({"orpo/nll": nll.detach().mean(), "orpo/log_odds": log_odds.detach().mean()})
        return LossOutput(nll - self.lam * ratio, metrics)
