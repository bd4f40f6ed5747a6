"""Where a run's files go, so that nothing a fit wrote is ever replaced by accident.

- A fit writes into its logger's directory (``save_dir/name/version``). If that directory already
  holds a run (``config.yaml``, ``checkpoints/``, ``hf/``, ``metrics.csv``, ``hparams.yaml``), a new
  fit stops with one line, unless it resumes that run (``--ckpt_path``) or is told ``--overwrite true``.
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
from pathlib import Path
from typing import Any

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


def check_fit_dir(folder: Path, resuming: bool, overwrite: bool) -> None:
    """Stop a fit that would replace another run's files (see the module docstring)."""
    found = [name for name in FIT_ARTIFACTS if (folder / name).exists()]
    if found and not resuming and not overwrite:
        raise ValueError(
            f"{folder} already holds a run ({', '.join(found)}): resume it with --ckpt_path "
            f"{folder / 'checkpoints' / 'last.ckpt'}, write elsewhere (--trainer.logger.init_args.version or save_dir), "
            f"or replace it with --overwrite true")


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
