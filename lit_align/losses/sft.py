"""Supervised fine-tuning term: token-mean NLL of the chosen completion."""

from __future__ import annotations

import torch

from lit_align.batch import LossOutput, PreferenceBatch, SequenceLogps
from lit_align.losses.base import PreferenceLoss, mean_nll


class SFT(PreferenceLoss):
    """``L = -(1/|y_w|) log pi(y_w | x)``: plain SFT on the chosen responses.

    On its own it is the SFT stage; summed with DPO (``WeightedLoss``) it is RPO
    (Pang et al. 2024, arXiv 2404.19733), which keeps the chosen likelihood from collapsing.
    """

    requires_reference = False
    uses_rejected = False  # alone, the module forwards only the chosen rows

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        nll = mean_nll(policy)  # (B,)
        with torch.no_grad():
            metrics = {"nll": nll.mean(), "ppl": nll.mean().exp()}
        return LossOutput(nll, metrics)
