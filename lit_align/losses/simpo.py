"""Reference-free losses on length-normalised log-probs: SimPO."""

from __future__ import annotations

from lit_align.batch import LossOutput, PreferenceBatch, SequenceLogps
from lit_align.losses.base import PreferenceLoss, check_non_negative, check_positive, logsigmoid, reward_metrics


class SimPO(PreferenceLoss):
    """SimPO, Meng et al. 2024 (arXiv 2405.14734): ``L = -ls(beta (pw_bar - pl_bar) - gamma)``.

    No reference: the reward is the length-normalised log-prob ``beta * pw_bar``, and the margin
    must exceed ``gamma``. The paper tunes beta in 2..10 and gamma/beta in 0.3..0.5 (defaults:
    beta 2, gamma 1).
    """

    requires_reference = False

    def __init__(self, beta: float = 2.0, gamma: float = 1.0) -> None:
        """
        Args:
            beta: Reward scale on the mean token log-prob.
            gamma: Target reward margin (gamma/beta 0.3..0.5 in the paper).
        """
        super().__init__()
        self.beta = check_positive("beta", beta)
        self.gamma = check_non_negative("gamma", gamma)

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        pw, pl = policy.chosen_mean, policy.rejected_mean  # (B,)
        losses = -logsigmoid(self.beta * (pw - pl) - self.gamma)
        return LossOutput(losses, reward_metrics(self.beta, pw, pl))
