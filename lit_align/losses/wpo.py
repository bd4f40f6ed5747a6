"""WPO weighting: an option that wraps any loss."""

from __future__ import annotations

import torch

from lit_align.batch import LogpsRequest, LossOutput, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.losses.base import LossWrapper


class WPOWeighted(LossWrapper):
    """WPO, Zhou et al. 2024 (Weighted Preference Optimization, arXiv 2406.11827): off-policy pairs weighted.

    Each pair's loss from the wrapped ``loss`` is multiplied by the detached weight
    ``w = w(y_w) * w(y_l)``, ``w(y) = exp(mean_t [log p(y_t) - log sum_v p(v)^2])``, the
    length-normalised probability of the completion under the current policy relative to the
    policy's own sampling distribution (as in TRL's ``use_weighting``).
    ``log sum_v p_v^2`` is computed inside the chunked log-prob pass (``LogpsRequest.sum_sq_probs``).

    Composition: ``WPOWeighted(DPO())`` is WPO; it wraps any loss, e.g. ``WPOWeighted(IPO())``. To
    weight only the preference term of RPO, wrap that term: ``WeightedLoss([WPOWeighted(DPO()), SFT()])``.
    Put it outside :class:`LengthDesensitized` (the weight reads the policy's unmodified log-probs).
    """

    @property
    def logps_request(self) -> LogpsRequest:
        return self.loss.logps_request | LogpsRequest(sum_sq_probs=True)

    @staticmethod
    def weights(policy: SequenceLogps) -> torch.Tensor:
        """Detached pair weights (B,)."""
        if policy.mean_log_sum_sq_probs is None:
            raise ConfigError("WPOWeighted needs the sum_sq_probs statistic: compute log-probs with its logps_request")
        half = policy.chosen.shape[0]
        stat = policy.mean_log_sum_sq_probs.detach()  # (2B,)
        log_w = (policy.chosen_mean.detach() - stat[:half]) + (policy.rejected_mean.detach() - stat[half:])
        return torch.exp(log_w)  # (B,)

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        weight = self.weights(policy).to(policy.chosen.dtype)
        out = self.loss(policy, reference, batch)
        metrics = dict(out.metrics)
        metrics["wpo/weight"] = weight.mean()
        return LossOutput(out.losses * weight, metrics)
