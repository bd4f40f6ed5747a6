"""DiscoPOP: the LLM-discovered log-ratio modulated loss."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.losses.base import Divergence, PairwiseLoss, check_positive, logsigmoid


class DiscoPOP(PairwiseLoss):
    """DiscoPOP, Chris Lu et al. 2024 (Discovering Preference Optimization Algorithms, arXiv 2406.08414).

    With ``z = beta D`` and ``m = s(z / tau)``: ``L = -ls(z) (1 - m) + e^{-z} m``, a blend of the
    logistic (DPO) and exponential losses gated by the margin's sign.
    """

    def __init__(self, beta: float = 0.05, tau: float = 0.05, divergence: Divergence | None = None) -> None:
        """
        Args:
            beta: Scale of the margin: ``z = beta * D``.
            tau: Temperature of the modulation sigmoid (0.05 in the paper).
            divergence: f-divergence whose score ``f'(pi / pi_ref)`` replaces each log-ratio (f-DPO, arXiv
                2309.16240: ``ForwardKL``, ``JensenShannon``, ``AlphaDivergence``); None: reverse KL, the
                log-ratio itself.
        """
        super().__init__(beta, divergence)
        self.tau = check_positive("tau", tau)

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        z = self.beta * (chosen - rejected)  # (B,)
        m = torch.sigmoid(z / self.tau)
        return -logsigmoid(z) * (1 - m) + torch.exp(-z) * m
