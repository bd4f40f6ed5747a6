"""AOT: distributional alignment by optimal transport, over the batch."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.batch import LossOutput, PreferenceBatch, SequenceLogps
from lit_align.losses.base import PairwiseLoss, check_in_range, logsigmoid, reward_metrics


class _AOT(PairwiseLoss):
    """Shared hyper-parameters of the AOT losses (no f-divergence option: they sort raw log-ratios)."""

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        """
        Args:
            beta: Scale of each sorted difference ``d_k`` inside the (smoothed) log-sigmoid, as DPO's beta.
            label_smoothing: Label smoothing e of the smoothed sigmoid, as in cDPO.
        """
        super().__init__(beta)
        self.label_smoothing = check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)

    def smoothed(self, delta: Tensor) -> Tensor:
        z = self.beta * delta
        e = self.label_smoothing
        return -(1 - e) * logsigmoid(z) - e * logsigmoid(-z)


class AOTPaired(_AOT):
    """AOT for paired data, Melnyk et al. 2024 (arXiv 2406.05882), TRL's ``aot``.

    Sort the policy margins ``pw - pl`` and the reference margins ``qw - ql`` over the batch
    independently, then ``L_k = -(1-e) ls(beta d_k) - e ls(-beta d_k)`` with ``d_k`` the difference
    of the k-th smallest of each: the policy's margin distribution must dominate the reference's
    (first-order stochastic dominance). Batch-level: on several ranks each sorts its local batch.
    """

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        rw, rl = self.scores(policy, reference)
        policy_margins = torch.sort(policy.chosen - policy.rejected).values  # (B,)
        reference_margins = torch.sort(reference.chosen - reference.rejected).values
        return LossOutput(self.smoothed(policy_margins - reference_margins), reward_metrics(self.beta, rw, rl))


class AOTUnpaired(_AOT):
    """AOT for unpaired data, Melnyk et al. 2024 (arXiv 2406.05882), TRL's ``aot_pair``.

    Sort the chosen log-ratios ``rw`` and the rejected log-ratios ``rl`` over the batch
    independently (the pairing is not used), then the smoothed sigmoid of the sorted differences:
    the chosen reward distribution must dominate the rejected one. Batch-level, per rank.
    """

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        rw, rl = self.scores(policy, reference)
        delta = torch.sort(rw).values - torch.sort(rl).values  # (B,)
        return LossOutput(self.smoothed(delta), reward_metrics(self.beta, rw, rl))
