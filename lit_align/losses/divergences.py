"""f-divergence scores for f-DPO (Wang et al. 2023, "Beyond Reverse KL", arXiv 2309.16240).

For an f-divergence regulariser the implicit reward is
``beta * f'(pi / pi_ref)``; with ``r = log(pi / pi_ref)`` the scores below replace ``r`` in any
:class:`~lit_align.losses.base.PairwiseLoss` (``DPO(divergence=JensenShannon())`` is f-DPO with JS).
Additive constants of ``f'`` cancel in score differences and are dropped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_align.errors import ConfigError
from lit_align.losses.base import Divergence, ReverseKL


class ForwardKL(Divergence):
    """Forward KL, ``f(u) = -log u``, ``f'(u) = -1/u``: score ``-e^{-r}``."""

    def forward(self, log_ratio: Tensor) -> Tensor:
        return -torch.exp(-log_ratio)


class JensenShannon(Divergence):
    """Jensen-Shannon, ``f'(u) = log(2u / (1 + u))``: score ``logsigmoid(r)`` (the ``log 2`` cancels)."""

    def forward(self, log_ratio: Tensor) -> Tensor:
        return F.logsigmoid(log_ratio)


class AlphaDivergence(Divergence):
    """Alpha-divergence: score ``e^{(a-1) r} / (a - 1)`` (this project's ``a``; below, how it maps to the paper's alpha).

    ``a -> 1`` tends to reverse KL (score ``r`` plus a constant), ``a = 0`` is forward KL. In the
    paper's (and TRL's ``alpha_divergence_coef``) convention ``f'(u) = (1 - u^-alpha) / alpha``, so
    the paper's ``alpha`` is ``1 - a`` here; the paper uses alpha in (0, 1), i.e. ``a`` in (0, 1).
    """

    def __init__(self, alpha: float = 0.5) -> None:
        """
        Args:
            alpha: The divergence's ``a`` (0.5: halfway between forward and reverse KL).
        """
        super().__init__()
        if not (math.isfinite(alpha) and alpha != 1):
            raise ConfigError(f"alpha must be finite and != 1 (alpha = 1 is reverse KL: use ReverseKL), got {alpha}")
        self.alpha = alpha

    def forward(self, log_ratio: Tensor) -> Tensor:
        return torch.exp((self.alpha - 1) * log_ratio) / (self.alpha - 1)


__all__ = ["AlphaDivergence", "Divergence", "ForwardKL", "JensenShannon", "ReverseKL"]
