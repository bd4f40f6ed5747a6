"""Checkpoint files that are either the previous complete one or the new complete one, never half.

Lightning's ``TorchCheckpointIO`` serialises to memory and then writes the target path through
fsspec; on a local disk a kill during that write (or a full disk) can leave ``last.ckpt``
truncated, and the resumable state of the run is lost with it. ``AtomicCheckpointIO`` writes to a
temporary file in the same folder, flushes it to disk (``fsync``), renames it over the target
(``os.replace``, atomic on POSIX and Windows) and fsyncs the folder, so the rename itself survives a
power cut. Remote paths (``s3://`` ...) go through Lightning's own writer.

It also masks credentials in the checkpoint's ``hyper_parameters`` (``lit_align.redaction``): a key
in a URL must not travel inside every ``.ckpt``.

``AlignTrainer`` installs it in place of the default ``TorchCheckpointIO`` (single device, DDP,
and FSDP / FSDP2 full-state files). Sharded checkpoints (DCP folders, DeepSpeed) are written by
their strategies and are not covered.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_align.redaction import redact

HPARAM_KEYS = ("hyper_parameters", "datamodule_hyper_parameters")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)`` through a same-folder temporary file, fsync and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves the previous file, and no litter
        raise
    fsync_dir(path.parent)
    for stale in path.parent.glob(f".{path.name}.tmp*"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)


def redact_hyperparameters(*objects: Any) -> None:
    """Mask credentials in the saved hyper-parameters of modules / data modules, in place.

    Lightning writes them to ``hparams.yaml`` (``hparams_initial``) and into every checkpoint
    (``hparams``); the objects are already built, so the records need not keep a key.
    """
    for obj in objects:
        for attr in ("_hparams", "_hparams_initial"):
            hparams = getattr(obj, attr, None)
            if hparams:
                clean = redact(dict(hparams))
                hparams.clear()
                hparams.update(clean)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic and whose hyper-parameters carry no credentials."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        checkpoint = {k: redact(v) if k in HPARAM_KEYS else v for k, v in checkpoint.items()}
        save_atomic(checkpoint, Path(path))
