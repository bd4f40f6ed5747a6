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


def save_atomic(obj: Any, path: Path, checksum: bool = True) -> None:
    """``torch.save(obj, path)`` through a same-folder temporary file, fsync and ``os.replace``.

    With ``checksum``, ``<path>.sha256`` is written with it (``lit_align.checkpoint_files``: the order of
    the renames keeps a listed digest for whichever file a kill leaves). A full disk (or quota) raises
    ``DiskFullError`` naming the folder; the previous file is left as it was.
    """
    from lit_align.checkpoint_files import (HashingWriter, checksum_path, file_digest, full_disk_error, is_full_disk,
                                            listed_digests, write_checksum)

    folder = path.parent
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    writer = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            writer = HashingWriter(f)
            torch.save(obj, writer)
            f.flush()
            os.fsync(f.fileno())
        if checksum:
            digest = writer.digest.hexdigest()
            previous = ((listed_digests(path) or [file_digest(path)])[:1]) if path.exists() else []
            write_checksum(path, [digest, *previous])  # both files a kill can leave are listed...
        os.replace(tmp, path)
        if checksum:
            write_checksum(path, [digest])  # ...and once the rename is done, only the new one
        fsync_dir(folder)
    except BaseException as err:
        tmp.unlink(missing_ok=True)  # a failed write leaves the previous file, and no litter
        cause = err if is_full_disk(err) else (writer.error if writer is not None else None)
        if is_full_disk(cause):
            raise full_disk_error(folder, path.name) from None
        raise
    for stale in folder.glob(f".{path.name}.tmp*"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    for stale in folder.glob(f".{checksum_path(path).name}.tmp*"):
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
    """``TorchCheckpointIO`` whose saves are atomic and checksummed, whose loads are verified and
    weights-only, which never writes non-finite weights, and whose hyper-parameters carry no credentials."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        refuse_non_finite(checkpoint.get("state_dict") or {}, f"checkpoint {path}")
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        checkpoint = {k: redact(v) if k in HPARAM_KEYS else v for k, v in checkpoint.items()}
        save_atomic(checkpoint, Path(path))

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        if not _is_local_file_protocol(path) or not Path(path).is_file():
            return super().load_checkpoint(path, map_location, weights_only)
        from lit_align.checkpoint_files import load_checkpoint

        # weights_only=None (Lightning's default) loads weights-only; only an explicit False from a caller does not
        return load_checkpoint(path, map_location or (lambda storage, loc: storage), weights_only)

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        if _is_local_file_protocol(path):
            from lit_align.checkpoint_files import checksum_path

            checksum_path(Path(path)).unlink(missing_ok=True)


def refuse_non_finite(state_dict: dict[str, Any], what: str) -> None:
    """Raise ``NonFiniteWeightsError`` naming the first weights with a NaN / inf, before they are written or used."""
    from lit_align.errors import NonFiniteWeightsError

    bad = [name for name, value in state_dict.items()
           if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise NonFiniteWeightsError(f"refusing to use {what}: non-finite weights, {len(bad)} of {len(state_dict)} weight tensors "
                                    f"hold NaN or inf (first {', '.join(bad[:3])}); the run diverged (lower model.lr, clip gradients)")
