"""Config files as their users run them: the ``cli.py`` command each file's first line states."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def stated_command(path: Path) -> list[str] | None:
    """``[subcommand, "--config", a, "--config", b, ...]`` from a first line ``# python cli.py <sub> --config a ...``.

    Only the ``--config`` layers are kept (paths made absolute). None when the line states no ``cli.py``
    command or names a file the repository does not hold (a run's own ``config.yaml``): the caller then
    infers how to parse the file.
    """
    line = path.read_text().splitlines()[0].lstrip("# ")
    if not line.startswith("python cli.py "):  # prose (which may hold a lone apostrophe) or another command
        return None
    words = shlex.split(line)
    layers = [REPO / words[i + 1] for i, w in enumerate(words[:-1]) if w == "--config"]
    if not layers or not all(p.is_file() for p in layers):
        return None
    return [words[2]] + [arg for p in layers for arg in ("--config", str(p))]


def layered(command: list[str]) -> dict:
    """The YAML of a command's ``--config`` layers merged key by key, later layers winning (as jsonargparse
    merges a layer's ``init_args`` into those of the same class)."""
    def merge(base: dict, top: dict) -> dict:
        out = dict(base)
        for k, v in top.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    merged: dict = {}
    for i, word in enumerate(command[:-1]):
        if word == "--config":
            merged = merge(merged, yaml.safe_load(Path(command[i + 1]).read_text()) or {})
    return merged
