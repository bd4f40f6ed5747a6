"""Preference losses: one module per algorithm, composable with :class:`WeightedLoss`."""

from lit_align.losses.base import PairwiseLoss, PreferenceLoss
from lit_align.losses.dpo import DPO
from lit_align.losses.sft import SFT
from lit_align.losses.weighted import WeightedLoss

__all__ = ["DPO", "SFT", "PairwiseLoss", "PreferenceLoss", "WeightedLoss"]
