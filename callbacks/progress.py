"""The training progress bar in optimizer steps: ``epoch 0  12/200  train_loss: 0.68``.

Lightning's bar counts batches of the current epoch (``4/2`` under gradient accumulation), reads
``Epoch 0/-2`` when ``max_steps`` bounds the run (max_epochs -1) and shows the logger's version
(``v_num``). This one counts optimizer steps of the whole fit (``trainer.global_step`` of
``trainer.estimated_stepping_batches``, i.e. of ``max_steps`` when that is the bound) and shows the
training loss (and ``val_loss`` once there is one).
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """Rich progress bar whose training bar counts optimizer steps of the whole fit."""

    @property
    def total_train_batches(self) -> int | float:
        total = self.trainer.estimated_stepping_batches
        return int(total) if math.isfinite(total) else float("inf")

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"epoch {current_epoch}"
        if len(self.validation_description) > len(description):  # as Lightning's: no flicker against "Validation"
            description = f"{description:{len(self.validation_description)}}"
        return description

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._update(self.train_progress_bar_id, trainer.global_step)  # a new epoch, or a resumed run, continues

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # resumed mid-epoch
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the run directory says which version this is
        return metrics
