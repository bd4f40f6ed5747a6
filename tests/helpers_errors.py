"""Test-only components injected by class_path: a loss that turns NaN at a chosen step, a weight recorder."""

from __future__ import annotations

import lightning as L
import torch

from lit_align.batch import LossOutput
from lit_align.losses import DPO

SNAPSHOTS: dict[int, dict[str, torch.Tensor]] = {}
"""global step -> policy weights right after that many optimizer steps (filled by RecordWeights)."""


class NaNAtStep(DPO):
    """DPO whose loss is NaN on the ``at_call``-th training call (0-based): a forced divergence."""

    def __init__(self, at_call: int = 2, beta: float = 0.1) -> None:
        super().__init__(beta)
        self.at_call = at_call
        self.calls = 0

    def forward(self, policy, reference, batch) -> LossOutput:
        out = super().forward(policy, reference, batch)
        if not torch.is_grad_enabled():  # validation / sanity check: not counted
            return out
        self.calls += 1
        if self.calls - 1 == self.at_call:
            out.losses = out.losses * float("nan")
        return out


class RecordWeights(L.Callback):
    """Stores a copy of the policy's weights at fit start (step 0) and after every optimizer step."""

    def on_fit_start(self, trainer, pl_module) -> None:
        SNAPSHOTS.clear()
        SNAPSHOTS[0] = {k: v.detach().clone() for k, v in pl_module.policy.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        SNAPSHOTS[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.policy.state_dict().items()}
