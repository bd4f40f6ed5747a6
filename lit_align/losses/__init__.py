"""Preference losses: one module per algorithm, composable with :class:`WeightedLoss`.

Options that apply to any loss are wrappers (:class:`WPOWeighted`, :class:`LengthDesensitized`);
f-divergences are score modules injected into any :class:`PairwiseLoss` (``divergence=``).
"""

from lit_align.losses.anchored import APODown, APOZero, NCAPair, SPPOHard
from lit_align.losses.aot import AOTPaired, AOTUnpaired
from lit_align.losses.base import Divergence, PairwiseLoss, PreferenceLoss, ReverseKL
from lit_align.losses.bco import BCOPair
from lit_align.losses.cpo import CPO
from lit_align.losses.discopop import DiscoPOP
from lit_align.losses.divergences import AlphaDivergence, ForwardKL, JensenShannon
from lit_align.losses.dpo import DPO, LengthNormalizedDPO, RobustDPO
from lit_align.losses.dpop import DPOP
from lit_align.losses.epsilon_dpo import EpsilonDPO
from lit_align.losses.exo import EXOPair
from lit_align.losses.ld_dpo import LengthDesensitized
from lit_align.losses.margin import IPO, Hinge
from lit_align.losses.minor_dpo import MinorDPO
from lit_align.losses.odpo import ODPO
from lit_align.losses.orpo import ORPO
from lit_align.losses.reference_free import LikelihoodDPO, PosteriorDPO
from lit_align.losses.sft import SFT
from lit_align.losses.simpo import SimPO
from lit_align.losses.weighted import WeightedLoss
from lit_align.losses.wpo import WPOWeighted

__all__ = [
    "AOTPaired", "AOTUnpaired", "APODown", "APOZero", "AlphaDivergence", "BCOPair", "CPO", "DPO", "DPOP",
    "DiscoPOP", "Divergence", "EXOPair", "EpsilonDPO", "ForwardKL", "Hinge", "IPO", "JensenShannon",
    "LengthDesensitized", "LengthNormalizedDPO", "LikelihoodDPO", "MinorDPO", "NCAPair", "ODPO", "ORPO",
    "PairwiseLoss", "PosteriorDPO", "PreferenceLoss", "ReverseKL", "RobustDPO", "SFT", "SPPOHard", "SimPO",
    "WPOWeighted", "WeightedLoss",
]
