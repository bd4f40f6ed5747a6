"""MinorDPO: the rejected completion is pushed down only while it is above the reference."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.losses.base import PairwiseLoss, logsigmoid


class MinorDPO(PairwiseLoss):
    """MinorDPO, Xie et al. 2024 (arXiv 2408.09834).

    ``L = -ls(beta * rw - beta * max(0, rl))``: once ``pl <= ql`` the rejected side gets no gradient,
    so DPO's over-penalisation of rejected completions (and the collateral fall of the chosen
    log-prob) stops.
    """

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        return -logsigmoid(self.beta * chosen - self.beta * torch.clamp(rejected, min=0))
