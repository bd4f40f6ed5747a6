"""Where a run's files go, so that nothing a fit wrote is ever replaced by accident.

- A fit writes into its logger's directory (``save_dir/name/version``). If that directory already
  holds a run (a checkpoint under ``checkpoints/``, or ``hf/``), a new fit stops with one line, unless
  it resumes that run (``--ckpt_path``) or is told ``--overwrite true``; the files a failed start
  leaves (``config.yaml``, ``hparams.yaml``, ``metrics.csv`` without a checkpoint) are replaced, with a
  warning. A fit claims its directory first (``RunDirLock``), so two fits started at once cannot both pass.
  (Lightning itself only warns, then replaces the files; the configs here use ``version: ""``, so the
  same command run twice would clobber the first run's checkpoints.)
- ``cli.py evaluate --config <run>/config.yaml`` reads the fit's config, logger included, but writes
  (its own config.yaml, hparams.yaml, metrics.csv and results.json) into ``<run>/eval/version_N``,
  the next free number, so a second evaluation keeps the first; ``--output_dir`` names the folder
  instead (a rerun into the same folder resumes judge caches and replaces its results). ``validate``,
  ``test`` and ``predict`` likewise log into ``<run>/validate/version_N`` (``test/``, ``predict/``).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from lit_align.errors import UserError

FIT_ARTIFACTS = ("config.yaml", "hparams.yaml", "metrics.csv", "checkpoints", "hf")


def fit_dir(trainer) -> Path:
    """The run directory a fit writes to, like ``trainer.log_dir`` but without its broadcast (which
    cannot run before the process group exists: this is read before ``trainer.fit``)."""
    if trainer.loggers:
        logger = trainer.loggers[0]
        folder = getattr(logger, "log_dir", None) or logger.save_dir
    else:
        folder = None
    return Path(folder or trainer.default_root_dir)


def saved_checkpoints(folder: Path) -> list[Path]:
    """The checkpoints a run directory holds (``checkpoints/*.ckpt`` files, sharded checkpoint folders), newest first."""
    found = [p for p in (folder / "checkpoints").glob("*") if not p.name.startswith(".")
             and ((p.is_file() and p.suffix == ".ckpt") or (p.is_dir() and any((p / m).exists() for m in (".metadata", "latest"))))]
    return sorted(found, key=lambda p: (p.name != "last.ckpt", -p.stat().st_mtime))


def check_fit_dir(folder: Path, resuming: bool, overwrite: bool) -> None:
    """Stop a fit that would replace another run's files (see the module docstring).

    A run is what can be resumed or used: a checkpoint or an export (``hf/``). A directory with only
    the files a failed start leaves (config.yaml, hparams.yaml, metrics.csv of a run that died before
    its first checkpoint) is not protected: the corrected rerun writes over them, with a warning.
    """
    found = [name for name in FIT_ARTIFACTS if (folder / name).exists()]
    checkpoints = saved_checkpoints(folder)
    if not found or resuming or overwrite:
        return
    if not checkpoints and not (folder / "hf").exists():
        warnings.warn(f"{folder} holds files of a run that left no checkpoint ({', '.join(found)}): they are replaced", stacklevel=2)
        return
    resume = f"resume it with --ckpt_path {checkpoints[0]}, " if checkpoints else ""
    raise UserError(
        f"{folder} already holds a run ({', '.join(found)}): {resume}write elsewhere "
        f"(--trainer.logger.init_args.version or save_dir), or replace it with --overwrite true")


def clear_replaced_run(folder: Path) -> None:
    """With ``--overwrite true``: remove the replaced run's checkpoints and export before the new fit writes its own.

    Left in place, Lightning would save the new run as ``last-v1.ckpt`` beside the old ``last.ckpt``, and
    ``--ckpt_path .../last.ckpt`` (resume or evaluate) would load the replaced run's weights.
    """
    import shutil

    for name in ("checkpoints", "hf"):
        if (folder / name).exists():
            shutil.rmtree(folder / name)


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
"""Environment variables by which launchers (Lightning's, torchrun, SLURM, jsrun) give a process its rank or node."""


def first_process() -> bool:
    """Whether this is the first process of a (possibly multi-process, multi-node) run, read from the launchers' env."""
    return all(os.environ.get(name, "0").strip() in ("", "0") for name in RANK_VARIABLES)


class RunDirLock:
    """An exclusive claim on a run directory for one fit: ``.<run>.fit.lock`` beside it, held with ``flock``
    (outside the run directory, which Lightning's loggers want empty).

    Two fits started at once into one directory would otherwise both pass ``check_fit_dir`` (neither
    has written anything yet) and write over each other. The claim is taken before the check; the
    second fit stops in one line naming the first's pid. The kernel drops a ``flock`` when its process
    dies, so a killed fit leaves no stale claim (its file is reused). Where ``fcntl`` is missing
    (Windows) no claim is taken.
    """

    def __init__(self, folder: Path) -> None:
        folder = Path(folder).absolute()
        self.path = folder.parent / f".{folder.name}.fit.lock"
        self.fd: int | None = None

    def acquire(self) -> RunDirLock:
        try:
            import fcntl
        except ImportError:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise UserError(f"{self.path.parent / self.path.name[1:-len('.fit.lock')]} is being written by another fit (pid {holder}, claim "
                                f"{self.path}): wait for it to end, or write elsewhere") from None
            try:  # the holder may have released and removed the file between our open and flock: retry on the new one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: a waiter that opened the old file retries
        os.close(self.fd)
        self.fd = None


def next_version(folder: Path) -> Path:
    """``folder/version_N`` with N one above the highest existing (0 for none), as Lightning numbers runs."""
    numbers = [int(m[1]) for p in (folder.iterdir() if folder.is_dir() else []) if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return folder / f"version_{max(numbers, default=-1) + 1}"


def logger_run_dir(logger: Any, default_root_dir: str | None) -> Path:
    """The run directory a fit config's logger names, computed without creating anything.

    An auto-numbered logger (``version: null``, the CLI's default) names no run: its
    ``save_dir/name`` is used, not the next free version a new fit would get.
    """
    if logger is None or isinstance(logger, bool):
        return Path(default_root_dir or os.getcwd())
    if getattr(logger, "_version", "") is None and getattr(logger, "root_dir", None):
        return Path(logger.root_dir)
    return Path(getattr(logger, "log_dir", None) or logger.save_dir or default_root_dir or os.getcwd())


def evaluation_dir(logger: Any, default_root_dir: str | None, output_dir: str | None, folder: str = "eval") -> Path:
    """Where an evaluation writes: ``output_dir``, else ``<run>/<folder>/version_N``; never into a fit's run directory."""
    target = Path(output_dir) if output_dir else next_version(logger_run_dir(logger, default_root_dir) / folder)
    if (target / "checkpoints").exists() or (target / "hf").exists():
        raise ValueError(f"evaluate would write into {target}, a fit's run directory (it holds checkpoints/ or hf/); "
                         f"give another --output_dir")
    return target


def resolved_logger_version(trainer) -> Any:
    """The version the run's logger settled on (``3`` for ``version_3``), or None without a versioned logger."""
    logger = trainer.loggers[0] if trainer.loggers else None
    return getattr(logger, "version", None) if logger is not None and hasattr(logger, "root_dir") else None
