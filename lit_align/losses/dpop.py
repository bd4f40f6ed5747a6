"""DPO-Positive (Smaug)."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.batch import LossOutput, PreferenceBatch, SequenceLogps
from lit_align.losses.base import Divergence, PairwiseLoss, check_non_negative, logsigmoid, reward_metrics


class DPOP(PairwiseLoss):
    """DPO-Positive, Pal et al. 2024 (Smaug, arXiv 2402.13228, the DPOP loss as corrected July 2024).

    ``L = -ls(beta * (D - lam * max(0, qw - pw)))``: the penalty sits inside the sigmoid, scaled by
    beta, and is active only while the chosen log-prob is below the reference's, so the policy cannot
    widen the margin by lowering both completions (the failure mode on small-edit-distance pairs).
    With ``pw >= qw`` it equals DPO. ``qw - pw = -rw``, so the penalty is ``max(0, -rw)``.
    """

    def __init__(self, beta: float = 0.1, lam: float = 50.0, divergence: Divergence | None = None) -> None:
        """
        Args:
            beta: Scale of the penalised margin ``D - lam * max(0, qw - pw)``, as DPO's beta.
            lam: Penalty weight lambda (50 in the paper; results insensitive over 5..500). 0 is DPO.
            divergence: f-divergence whose score ``f'(pi / pi_ref)`` replaces each log-ratio (f-DPO, arXiv
                2309.16240: ``ForwardKL``, ``JensenShannon``, ``AlphaDivergence``); None: reverse KL, the
                log-ratio itself.
        """
        super().__init__(beta, divergence)
        self.lam = check_non_negative("lam", lam)

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        penalty = torch.clamp(-chosen, min=0)  # (B,) max(0, qw - pw)
        return -logsigmoid(self.beta * (chosen - rejected - self.lam * penalty))

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        sw, sl = self.scores(policy, reference)
        metrics = reward_metrics(self.beta, sw, sl)
        metrics["dpop/penalty"] = torch.clamp(-sw, min=0).detach().mean()
        metrics["dpop/active"] = (sw < 0).float().mean()  # fraction of pairs where the penalty acts
        return LossOutput(self.pair_loss(sw, sl), metrics)
