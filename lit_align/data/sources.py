"""Reading raw preference rows from local files, saved dataset folders or dataset names.

Every row comes with a location string (``file:line`` for jsonl, ``file:row N`` otherwise) so that
a malformed row can be reported precisely.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A malformed input row; the message names file, line / row and field."""


def iter_rows(source: str, split: str = "train") -> Iterator[tuple[str, Any]]:
    """Yield ``(location, row)``; ``row`` may be anything (validation happens in formats.py)."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            yield from _jsonl(path)
        elif suffix == ".json":
            yield from _json(path)
        elif suffix == ".parquet":
            yield from _parquet(path)
        else:
            raise DataError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .json or .parquet)")
    elif path.is_dir():
        from datasets import load_from_disk

        dataset = load_from_disk(str(path))
        if hasattr(dataset, "keys"):  # a DatasetDict
            if split not in dataset:
                raise DataError(f"{path}: no split {split!r} (has {sorted(dataset.keys())})")
            dataset = dataset[split]
        for i, row in enumerate(dataset):
            yield f"{path}:row {i}", row
    elif "/" in source and not source.startswith((".", "/")) and not path.suffix:
        from datasets import load_dataset

        for i, row in enumerate(load_dataset(source, split=split)):
            yield f"{source}[{split}]:row {i}", row
    else:
        raise DataError(f"{source}: no such file or directory")


def _jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield f"{path}:{line_no}", DataError(f"{path}:{line_no}: invalid JSON ({err.msg} at column {err.colno})")
                continue
            yield f"{path}:{line_no}", row


def _json(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
    for i, row in enumerate(data):
        yield f"{path}:row {i}", row


def _parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield f"{path}:row {i}", row
