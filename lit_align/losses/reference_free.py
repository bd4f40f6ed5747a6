"""The reference-free objectives of the reference-policy study (Liu, Liu, Cohan 2024, arXiv 2407.13709).

Both plug a reward into DPO's ``-ls(r_w - r_l)``; the study found DPO beats both (code yale-nlp/refdpo).
"""

from __future__ import annotations

from torch import Tensor

from lit_align.batch import SequenceLogps
from lit_align.losses.base import Divergence
from lit_align.losses.dpo import DPO


class PosteriorDPO(DPO):
    """Posterior-probability objective: reward ``beta * log pi(y|x)``, i.e. DPO with a uniform reference.

    ``L = -ls(beta * (pw - pl))`` on summed log-probs (reference log-probs taken as 0, so no reference
    model runs). The study's best beta for it was about 100 with summed log-probs (Liu, Liu, Cohan 2024, arXiv 2407.13709);
    that is the default here.
    """

    requires_reference = False

    def __init__(self, beta: float = 100.0, label_smoothing: float = 0.0, divergence: Divergence | None = None) -> None:
        """
        Args:
            beta: Scale of the reward ``beta * log pi(y|x)`` on summed log-probs (the study's best was about
                100).
            label_smoothing: cDPO's assumed label-flip probability e, in [0, 0.5); 0 is no smoothing.
            divergence: f-divergence whose score replaces each log-probability (see ``DPO``); None: the
                log-probability itself.
        """
        super().__init__(beta, label_smoothing, divergence)

    def log_ratios(self, policy: SequenceLogps, reference: SequenceLogps | None) -> tuple[Tensor, Tensor]:
        return policy.chosen, policy.rejected  # q = 0


class LikelihoodDPO(DPO):
    """Likelihood-ratio objective: reward ``beta * [log pi(y|x) - log p(y)]``.

    The loss is DPO's; what differs is the reference: ``p(y)`` is the SFT model's UNCONDITIONAL
    log-prob of the response, with the prompt removed. Pair it with the reference strategy's
    unconditional mode; ``requires_unconditional_reference`` lets the module check the pairing.
    """

    requires_unconditional_reference: bool = True
    """Marks that the reference log-probs must be computed without the prompt."""

    def __init__(self, beta: float = 0.01, label_smoothing: float = 0.0, divergence: Divergence | None = None) -> None:
        """
        Args:
            beta: Scale of the likelihood-ratio reward ``log pi(y|x) - log p(y)``; 0.01, the study's best.
            label_smoothing: cDPO's assumed label-flip probability e, in [0, 0.5).
            divergence: f-divergence whose score replaces each log-ratio (as in DPO); None: the log-ratio itself.
        """
        super().__init__(beta, label_smoothing, divergence)
