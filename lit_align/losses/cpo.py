"""CPO: a reference-free DPO plus behaviour cloning on the chosen."""

from __future__ import annotations

from lit_align.batch import LossOutput, PreferenceBatch, SequenceLogps
from lit_align.losses.base import PreferenceLoss, check_non_negative, check_positive, logsigmoid, mean_nll, reward_metrics


class CPO(PreferenceLoss):
    """CPO, Xu et al. 2024 (Contrastive Preference Optimization, arXiv 2401.08417).

    ``L = -ls(beta (pw - pl)) + alpha * NLL_w``: DPO with the reference dropped (a uniform prior),
    plus the token-mean NLL of the chosen completion as a behaviour-cloning regulariser.
    """

    requires_reference = False

    def __init__(self, beta: float = 0.1, alpha: float = 1.0) -> None:
        """
        Args:
            beta: Scale of the summed log-prob margin.
            alpha: Weight of the NLL term (1 in the paper).
        """
        super().__init__()
        self.beta = check_positive("beta", beta)
        self.alpha = check_non_negative("alpha", alpha)

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        pw, pl = policy.chosen, policy.rejected  # (B,)
        nll = mean_nll(policy)
        metrics = reward_metrics(self.beta, pw, pl)
        metrics["cpo/nll"] = nll.detach().mean()
        return LossOutput(-logsigmoid(self.beta * (pw - pl)) + self.alpha * nll, metrics)
