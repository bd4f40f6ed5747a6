"""Losses that anchor each completion's reward separately, not only their difference.

NCA (pair form), APO zero / down, and SPPO's hard-label form.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.losses.base import PairwiseLoss, logsigmoid


class NCAPair(PairwiseLoss):
    """NCA, Chen et al. 2024 (Noise Contrastive Alignment, arXiv 2402.05369), pairwise form (as in TRL).

    ``L = -ls(beta rw) - 0.5 ls(-beta rw) - 0.5 ls(-beta rl)``: an absolute likelihood term for the
    chosen response keeps its log-prob from falling, unlike DPO's purely relative objective.
    """

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        zw, zl = self.beta * chosen, self.beta * rejected
        return -logsigmoid(zw) - 0.5 * logsigmoid(-zw) - 0.5 * logsigmoid(-zl)


class APOZero(PairwiseLoss):
    """APO-zero, D'Oosterlinck et al. 2024 (Anchored Preference Optimization, arXiv 2408.06266).

    ``L = (1 - s(beta rw)) + s(beta rl)``: raises chosen and lowers rejected likelihood; for when
    the chosen outputs are better than the model's own.
    """

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        return (1 - torch.sigmoid(self.beta * chosen)) + torch.sigmoid(self.beta * rejected)


class APODown(PairwiseLoss):
    """APO-down, D'Oosterlinck et al. 2024 (arXiv 2408.06266).

    ``L = s(beta rw) + (1 - s(beta D))``: lowers both likelihoods, the rejected more; for when the
    chosen outputs are worse than the model's own.
    """

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        return torch.sigmoid(self.beta * chosen) + (1 - torch.sigmoid(self.beta * (chosen - rejected)))


class SPPOHard(PairwiseLoss):
    """SPPO with hard labels, Wu et al. 2024 (Self-Play Preference Optimization, arXiv 2405.00675).

    ``L = (rw - 1/(2 beta))^2 + (rl + 1/(2 beta))^2``: the winner's log-ratio regresses to
    ``+1/(2 beta)`` and the loser's to ``-1/(2 beta)`` (win probabilities 1 and 0; TRL's ``sppo_hard``).
    """

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        target = 1 / (2 * self.beta)
        return (chosen - target) ** 2 + (rejected + target) ** 2
