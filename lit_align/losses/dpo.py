"""Direct Preference Optimization and its label-smoothed (conservative) form."""

from __future__ import annotations

from torch import Tensor

from lit_align.losses.base import PairwiseLoss, check_in_range, logsigmoid


class DPO(PairwiseLoss):
    """DPO, Rafailov et al. 2023 (arXiv 2305.18290), Eq. 7, with cDPO label smoothing.

    ``L = -(1 - e) * logsigmoid(beta * D) - e * logsigmoid(-beta * D)``, with
    ``D = (log pi(y_w) - log q(y_w)) - (log pi(y_l) - log q(y_l))``. ``e = 0`` is plain DPO;
    ``e > 0`` is cDPO (Mitchell 2023), which assumes labels are flipped with probability ``e``.
    """

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__(beta)
        self.label_smoothing = check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)
        """cDPO's assumed label-flip probability e, in [0, 0.5)."""

    def pair_loss(self, chosen_ratio: Tensor, rejected_ratio: Tensor) -> Tensor:
        z = self.beta * (chosen_ratio - rejected_ratio)
        e = self.label_smoothing
        return -(1 - e) * logsigmoid(z) - e * logsigmoid(-z)
