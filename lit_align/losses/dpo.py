"""DPO and its direct variants: label-smoothed (cDPO), robust (rDPO), length-normalised."""

from __future__ import annotations

from torch import Tensor

from lit_align.batch import SequenceLogps
from lit_align.losses.base import Divergence, PairwiseLoss, check_in_range, logsigmoid


class DPO(PairwiseLoss):
    """DPO, Rafailov et al. 2023 (arXiv 2305.18290), Eq. 7, with cDPO label smoothing.

    ``L = -(1 - e) * ls(beta * D) - e * ls(-beta * D)``, with
    ``D = (log pi(y_w) - log q(y_w)) - (log pi(y_l) - log q(y_l))``. ``e = 0`` is plain DPO;
    ``e > 0`` is cDPO (Mitchell 2023), which assumes labels are flipped with probability ``e``.
    With another ``divergence`` it is f-DPO (arXiv 2309.16240).
    """

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0, divergence: Divergence | None = None) -> None:
        """
        Args:
            beta: Strength of the KL tie to the reference: the implicit reward is ``beta * log(pi / pi_ref)``
                (0.1 typical; 0.01-0.02 best in Liu et al. 2024, arXiv 2407.13709).
            label_smoothing: cDPO's assumed label-flip probability e, in [0, 0.5).
            divergence: f-divergence whose score ``f'(pi / pi_ref)`` replaces each log-ratio (f-DPO, arXiv
                2309.16240: ``ForwardKL``, ``JensenShannon``, ``AlphaDivergence``); None: reverse KL, the
                log-ratio itself.
        """
        super().__init__(beta, divergence)
        self.label_smoothing = check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        z = self.beta * (chosen - rejected)  # (B,)
        e = self.label_smoothing
        return -(1 - e) * logsigmoid(z) - e * logsigmoid(-z)


class RobustDPO(PairwiseLoss):
    """rDPO, Chowdhury et al. 2024 (arXiv 2403.00409): an unbiased loss under label noise ``e``.

    ``L = [-(1 - e) ls(beta D) + e ls(-beta D)] / (1 - 2e)``, ``e`` in [0, 0.5); ``e = 0`` is DPO.
    """

    def __init__(self, beta: float = 0.1, label_noise: float = 0.1, divergence: Divergence | None = None) -> None:
        """
        Args:
            beta: Strength of the KL tie to the reference: the implicit reward is ``beta * log(pi / pi_ref)``
                (0.1 typical; 0.01-0.02 best in Liu et al. 2024, arXiv 2407.13709).
            label_noise: Assumed probability e that a pair's labels are flipped, in [0, 0.5).
            divergence: f-divergence whose score ``f'(pi / pi_ref)`` replaces each log-ratio (f-DPO, arXiv
                2309.16240: ``ForwardKL``, ``JensenShannon``, ``AlphaDivergence``); None: reverse KL, the
                log-ratio itself.
        """
        super().__init__(beta, divergence)
        self.label_noise = check_in_range("label_noise", label_noise, 0.0, 0.5)

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        z = self.beta * (chosen - rejected)  # (B,)
        e = self.label_noise
        return (-(1 - e) * logsigmoid(z) + e * logsigmoid(-z)) / (1 - 2 * e)


class LengthNormalizedDPO(DPO):
    """DPO on length-normalised log-ratios: ``L = -ls(beta (rw / |yw| - rl / |yl|))``.

    The length normalisation SimPO (Meng et al. 2024, arXiv 2405.14734) applies to the
    policy, here applied to both log-ratios so the reference is kept. ``beta`` acts on per-token
    ratios, so useful values are larger than DPO's.
    """

    def log_ratios(self, policy: SequenceLogps, reference: SequenceLogps | None) -> tuple[Tensor, Tensor]:
        rw = (policy.chosen - reference.chosen) / policy.chosen_tokens.clamp(min=1)  # (B,)
        rl = (policy.rejected - reference.rejected) / policy.rejected_tokens.clamp(min=1)
        return rw, rl
