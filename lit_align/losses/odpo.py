"""ODPO: DPO with a per-pair offset from the data's scores."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.batch import LossOutput, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.losses.base import Divergence, PairwiseLoss, check_non_negative, logsigmoid, reward_metrics


class ODPO(PairwiseLoss):
    """ODPO, Amini et al. 2024 (Direct Preference Optimization with an Offset, arXiv 2402.10571).

    ``L = -ls(beta D - alpha * log(score_w - score_l))``: the chosen reward must beat the rejected
    one by an offset that grows with how much better the chosen response scored. Scores come from
    the data (``score_chosen`` / ``score_rejected`` columns -> ``batch.scores``) and must satisfy
    ``score_w > score_l``.
    """

    def __init__(self, beta: float = 0.1, alpha: float = 1.0, divergence: Divergence | None = None) -> None:
        """
        Args:
            beta: Scale of the margin ``D``, as DPO's beta.
            alpha: Scale of the offset (1 in the paper); 0 is DPO.
            divergence: f-divergence whose score ``f'(pi / pi_ref)`` replaces each log-ratio (f-DPO, arXiv
                2309.16240: ``ForwardKL``, ``JensenShannon``, ``AlphaDivergence``); None: reverse KL, the
                log-ratio itself.
        """
        super().__init__(beta, divergence)
        self.alpha = check_non_negative("alpha", alpha)

    def offsets(self, batch: PreferenceBatch) -> Tensor:
        """``alpha * log(score_w - score_l)``, (B,)."""
        if batch.scores is None:
            raise ConfigError("ODPO needs per-pair scores: add score_chosen / score_rejected columns to the data")
        gap = batch.scores[:, 0] - batch.scores[:, 1]  # (B,)
        if bool((gap <= 0).any()):
            bad = int(batch.index[(gap <= 0).nonzero()[0, 0]])
            raise ConfigError(f"ODPO needs score_chosen > score_rejected; dataset row {bad} has a gap of {float(gap.min()):g}")
        return self.alpha * torch.log(gap)

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        sw, sl = self.scores(policy, reference)  # (B,)
        offset = self.offsets(batch).to(sw.dtype)
        losses = -logsigmoid(self.beta * (sw - sl) - offset)
        metrics = reward_metrics(self.beta, sw, sl)
        metrics["odpo/offset"] = offset.detach().mean()
        return LossOutput(losses, metrics)
