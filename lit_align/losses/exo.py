"""EXO in its pairwise form."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_align.errors import ConfigError
from lit_align.losses.base import Divergence, PairwiseLoss, logsigmoid


class EXOPair(PairwiseLoss):
    """EXO, Ji et al. 2024 (Efficient Exact Optimization, arXiv 2402.00856), pairwise form (TRL's ``exo_pair``).

    With ``z = beta D``: ``L = s(z) (ls(z) - log(1 - e)) + s(-z) (ls(-z) - log e)``, the reverse KL
    between the model's preference distribution ``(s(z), s(-z))`` and the smoothed label
    ``(1 - e, e)``; ``e`` must be > 0 (``log e``).
    """

    def __init__(self, beta: float = 0.1, eps: float = 1e-3, divergence: Divergence | None = None) -> None:
        """
        Args:
            beta: Scale of the margin: ``z = beta * D``.
            eps: Label smoothing of the target distribution (1e-3 in the paper and TRL).
            divergence: f-divergence whose score ``f'(pi / pi_ref)`` replaces each log-ratio (f-DPO, arXiv
                2309.16240: ``ForwardKL``, ``JensenShannon``, ``AlphaDivergence``); None: reverse KL, the
                log-ratio itself.
        """
        super().__init__(beta, divergence)
        if not 0 < eps < 0.5:
            raise ConfigError(f"eps must be in (0, 0.5), got {eps}")
        self.eps = eps

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        z = self.beta * (chosen - rejected)  # (B,)
        return torch.sigmoid(z) * (logsigmoid(z) - math.log(1 - self.eps)) + torch.sigmoid(-z) * (
            logsigmoid(-z) - math.log(self.eps)
        )
