"""Losses on the margin ``D`` other than the logistic one: IPO (squared) and hinge (SLiC / RSO)."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.batch import SequenceLogps
from lit_align.losses.base import Divergence, PairwiseLoss


class IPO(PairwiseLoss):
    """IPO, Azar et al. 2023 (arXiv 2310.12036): ``L = (D - 1/(2 beta))^2``.

    Regresses the margin to a finite target instead of pushing it to infinity. By default the
    log-ratios are length-normalised (``rw / |yw| - rl / |yl|``, as TRL does;
    the paper writes sums); ``length_normalized=False`` uses summed log-probs.
    """

    def __init__(self, beta: float = 0.1, length_normalized: bool = True, divergence: Divergence | None = None) -> None:
        """
        Args:
            beta: Sets the margin target ``1 / (2 beta)``: larger beta, smaller target, a tighter tie to the
                reference.
            length_normalized: Divide each log-ratio by its completion length (True) or use sums (False).
            divergence: f-divergence whose score ``f'(pi / pi_ref)`` replaces each log-ratio (f-DPO, arXiv
                2309.16240: ``ForwardKL``, ``JensenShannon``, ``AlphaDivergence``); None: reverse KL, the
                log-ratio itself.
        """
        super().__init__(beta, divergence)
        self.length_normalized = length_normalized

    def log_ratios(self, policy: SequenceLogps, reference: SequenceLogps | None) -> tuple[Tensor, Tensor]:
        rw, rl = super().log_ratios(policy, reference)
        if self.length_normalized:
            rw, rl = rw / policy.chosen_tokens.clamp(min=1), rl / policy.rejected_tokens.clamp(min=1)
        return rw, rl

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        return (chosen - rejected - 1 / (2 * self.beta)) ** 2


class Hinge(PairwiseLoss):
    """Hinge loss of SLiC (Zhao et al. 2023, arXiv 2305.10425) / RSO (Liu et al. 2023, arXiv 2309.06657).

    ``L = max(0, 1 - beta * D)``; RSO's normalised form with the reference log-ratios.
    """

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        return torch.relu(1 - self.beta * (chosen - rejected))
