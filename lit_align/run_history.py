"""A resumed fit keeps the metrics logged before its checkpoint.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts writing, so a run resumed
from a step-6 checkpoint used to hold only the rows from step 6 on. ``AlignTrainer.fit`` with a
``ckpt_path`` file reads each CSV logger's ``metrics.csv`` before anything is logged;
``KeepLoggedHistory`` writes back, once the checkpoint's step is restored (``on_train_start``), every
row logged before that step (``step`` < the checkpoint's ``global_step``: the rows of the optimizer
steps the checkpoint holds) with the file's header, as the original text, and drops the rows after
it (the resumed run logs those again). The resumed file is then the uninterrupted run's, byte for
byte (tests/test_kill_resume.py). CSVLogger is the only logger lit-align writes; other loggers
(TensorBoard, W&B ...) keep their own resume behaviour.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L


def csv_metrics_files(trainer: L.Trainer) -> list[tuple[object, Path]]:
    """(logger, its metrics.csv) for each CSV logger of the trainer, found without starting the logger."""
    from lightning.fabric.loggers.csv_logs import _ExperimentWriter
    from lightning.pytorch.loggers import CSVLogger

    return [(logger, Path(logger.log_dir) / _ExperimentWriter.NAME_METRICS_FILE)
            for logger in trainer.loggers if isinstance(logger, CSVLogger)]


def read_history(trainer: L.Trainer) -> dict[int, list[str]]:
    """The lines (header first) of each CSV logger's metrics.csv, keyed by the logger's index."""
    history = {}
    for index, (_, path) in enumerate(csv_metrics_files(trainer)):
        if path.is_file():
            history[index] = path.read_text().splitlines(keepends=True)
    return history


def rows_before(lines: list[str], step: int) -> list[str]:
    """The header and the rows whose ``step`` is below ``step`` (rows without a step are kept)."""
    if not lines:
        return []
    header = next(csv.reader([lines[0]]))
    column = header.index("step") if "step" in header else None
    kept = [lines[0]]
    for line in lines[1:]:
        values = next(csv.reader([line]), [])
        value = values[column] if column is not None and column < len(values) else ""
        if value.strip() == "" or int(float(value)) < step:
            kept.append(line)
    return kept


class KeepLoggedHistory(L.Callback):
    """Writes back the rows of metrics.csv logged before the resumed checkpoint (see the module docstring)."""

    def __init__(self) -> None:
        self.history: dict[int, list[str]] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        history, self.history = self.history, {}
        if not history or not trainer.is_global_zero:
            return
        for index, (logger, path) in enumerate(csv_metrics_files(trainer)):
            kept = rows_before(history.get(index, []), trainer.global_step)
            if len(kept) < 2:
                continue
            writer = logger.experiment  # created (and the old file deleted) by now
            writer.save()  # anything logged before training starts goes first, under its own header
            old = path.read_text().splitlines(keepends=True) if path.is_file() else []
            header = next(csv.reader([kept[0]]))
            if old and next(csv.reader([old[0]])) != header:
                continue  # rows under another header were logged already: leave the file to Lightning
            path.write_text("".join(kept + old[1:]))
            writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))
