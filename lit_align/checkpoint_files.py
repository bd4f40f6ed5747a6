"""Checkpoint files that are verified before use and loaded without running code.

- Every checkpoint file written by ``lit_align.checkpoint_io.save_atomic`` gets a checksum file
  beside it, ``<name>.sha256`` (``sha256sum`` format: ``<hex digest>  <name>``), hashed from the
  very bytes written. torch does not check its zip archive's CRCs, so flipped bytes inside
  ``last.ckpt`` would otherwise load without a word (and training would continue on corrupted
  weights or optimizer state). ``load_checkpoint`` verifies the file against it first and refuses a
  mismatch in one line naming the file.
- The checksum is replaced together with the checkpoint: the new checksum file lists the new digest
  and the digest of the file being replaced, is renamed into place, then the checkpoint is renamed
  over its target, then the checksum file is rewritten with the new digest alone. A kill anywhere in
  between leaves a checkpoint (old or new, both whole) whose digest is listed.
- A checkpoint with no checksum file (written before checksums existed, by another tool, or renamed
  without its ``.sha256``) is still checked against the CRC-32 of every member of its zip archive
  (torch writes them but never reads them), so flipped bytes are refused in one line there too; it
  then loads with a one-line warning; ``LIT_ALIGN_REQUIRE_CHECKSUM=1`` refuses it instead.
- ``torch.load`` always runs with ``weights_only=True`` (a downloaded ``.ckpt`` cannot run code);
  the project's own plain types that older checkpoints may hold in their hyper-parameters (model
  sources, paths) are allowlisted. A torch file that is not a Lightning checkpoint is refused in one
  line.
- A full disk while writing is reported as ``DiskFullError``: one line naming the directory.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from lit_align.errors import UserError

CHECKSUM_SUFFIX = ".sha256"
REQUIRE_CHECKSUM_ENV = "LIT_ALIGN_REQUIRE_CHECKSUM"
"""Set to 1 to refuse checkpoints that have no checksum file (instead of loading them with a warning)."""

LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")
"""Entries every Lightning checkpoint has: a torch file without them is not one."""

FULL_DISK_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class CheckpointFileError(UserError):
    """A checkpoint file that must not be used: corrupted, unsafe, or not a Lightning checkpoint."""


class DiskFullError(UserError, OSError):
    """A write ran out of space (or quota); the message names the directory."""


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def listed_digests(path: Path) -> list[str] | None:
    """The digests the checksum file beside ``path`` lists, or None when there is no checksum file."""
    sums = checksum_path(path)
    if not sums.is_file():
        return None
    return [line.split()[0].lower() for line in sums.read_text(errors="replace").splitlines() if line.split()]


_VERIFIED: set[tuple[str, int, int]] = set()
"""(path, size, mtime) of files verified in this process."""
_CRC_CHECKED: set[tuple[str, int, int]] = set()
"""The same for files without a checksum file whose zip CRCs were checked."""


def verify_checksum(path: str | Path) -> None:
    """Refuse (``CheckpointFileError``) a checkpoint file whose sha256 is not the one recorded beside it."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:  # the CLI reads a checkpoint twice (settings, then weights): hashed once
        return
    listed = listed_digests(path)
    if listed is None:
        message = (f"{path} has no checksum file ({checksum_path(path).name}; written before lit-align recorded "
                   f"checksums, or by another tool): loaded unverified")
        if os.environ.get(REQUIRE_CHECKSUM_ENV, "").strip() not in ("", "0"):
            raise CheckpointFileError(message.replace("loaded unverified", f"refused ({REQUIRE_CHECKSUM_ENV} is set)"))
        if key not in _CRC_CHECKED:  # the CLI reads a checkpoint twice: its archive read once
            verify_zip_crcs(path)
            _CRC_CHECKED.add(key)
        warnings.warn(message, stacklevel=2)
        return
    actual = file_digest(path)
    if actual in listed:
        _VERIFIED.add(key)
    else:
        raise CheckpointFileError(
            f"{path} is corrupted: its sha256 {actual[:16]}... is not the one recorded in {checksum_path(path).name} "
            f"when it was written ({', '.join(d[:16] + '...' for d in listed) or 'empty'}); refusing to load it "
            "(restore the file, or resume from another checkpoint)")


def verify_zip_crcs(path: Path) -> None:
    """Refuse a torch zip archive one of whose members does not match the CRC-32 the archive records for it.

    A file that is not a zip (a legacy torch pickle, a truncated file) is left to ``torch.load`` to report.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return
    if bad is not None:
        raise CheckpointFileError(
            f"{path} is corrupted: its member {bad} does not match the CRC-32 recorded in the archive (and there is no "
            f"{checksum_path(path).name} beside it); refusing to load it (restore the file, or resume from another checkpoint)")


class HashingWriter:
    """A binary file wrapper that hashes what is written, and remembers the OSError a write raised
    (torch's zip writer turns it into a vague RuntimeError: "unexpected pos ...")."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.digest = hashlib.sha256()
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            written = self.file.write(data)
        except OSError as err:
            self.error = err
            raise
        self.digest.update(data)
        return written

    def flush(self) -> None:
        self.file.flush()


def is_full_disk(err: BaseException | None) -> bool:
    return isinstance(err, OSError) and err.errno in FULL_DISK_ERRNOS


def full_disk_error(folder: Path, what: str) -> DiskFullError:
    err = DiskFullError(f"no space left on device in {folder} while writing {what} "
                        "(the previous checkpoint, if any, is intact): free space and resume")
    err.errno = errno.ENOSPC
    return err


def write_checksum(path: Path, digests: list[str]) -> None:
    """Write ``<path>.sha256`` atomically (same-folder temporary file, fsync, rename)."""
    sums = checksum_path(path)
    tmp = sums.with_name(f".{sums.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write("".join(f"{d}  {path.name}\n" for d in digests))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, sums)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def plain_types() -> list[Any]:
    """The project's own classes that older checkpoints hold in their hyper-parameters (a model source
    passed as an object through the Python API), allowlisted for ``weights_only`` loading."""
    import pathlib

    from lit_align.models import sources

    classes = [c for c in vars(sources).values() if isinstance(c, type) and issubclass(c, sources.ModelSource)]
    return classes + [pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath]


def load_checkpoint(path: str | Path, map_location: Any = "cpu", weights_only: bool | None = True,
                    require_lightning: bool = True) -> dict:
    """Verify ``path`` against its checksum, then ``torch.load`` it without running code.

    Args:
        path: a checkpoint file.
        map_location: as for ``torch.load``.
        weights_only: True (the default, None too) refuses any pickled object that is not a tensor, a plain
            container or an allowlisted project type; False only where a caller explicitly trusts the file.
        require_lightning: refuse a torch file without the entries of a Lightning checkpoint.
    """
    verify_checksum(path)
    try:
        with torch.serialization.safe_globals(plain_types()):
            checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only is not False)
    except pickle.UnpicklingError as err:
        detail = next((line.strip() for line in str(err).splitlines() if "Unsupported global" in line
                       or "Unsupported operand" in line), "")
        raise CheckpointFileError(
            f"{path}: refused to load, it holds pickled objects that could run code ({detail.rstrip('.') or 'not weights-only'}); "
            "lit-align loads checkpoints with weights_only=True") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointFileError(f"{path}: cannot be loaded ({type(err).__name__}: {first})") from None
    if require_lightning:
        missing = [k for k in LIGHTNING_KEYS if not (isinstance(checkpoint, dict) and k in checkpoint)]
        if missing:
            raise CheckpointFileError(f"{path}: a torch file but not a Lightning checkpoint (no {' / '.join(repr(k) for k in missing)} "
                                      "entry); give a .ckpt written by the trainer")
    return checkpoint
