"""Reading raw preference rows from local files, saved dataset folders or dataset names.

Every row comes with a location string (``file:line`` for jsonl, ``file:row N`` otherwise) so that
a malformed row can be reported precisely.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lit_align.errors import UserError


class DataError(UserError):
    """A malformed input row or data file; the message names file, line / row and field."""


def iter_rows(source: str, split: str = "train") -> Iterator[tuple[str, Any]]:
    """Yield ``(location, row)``; ``row`` may be anything (validation happens in formats.py)."""
    path = Path(source)
    if path.is_file():
        suffixes = [s.lower() for s in path.suffixes] or [""]
        compression = suffixes[-1] if suffixes[-1] in COMPRESSED else None
        suffix = (suffixes[-2] if len(suffixes) > 1 else "") if compression else suffixes[-1]
        if suffix in (".jsonl", ".ndjson"):
            yield from _checked_read(path, compression, _jsonl)
        elif suffix == ".json":
            yield from _checked_read(path, compression, _json)
        elif suffix == ".parquet" and not compression:
            yield from _parquet(path)
        else:
            raise DataError(f"{path}: unsupported file type {''.join(suffixes[-2:] if compression else suffixes[-1:])!r} "
                            "(use .jsonl, .json or .parquet; .jsonl / .json may be compressed: .gz, .bz2, .xz)")
    elif path.is_dir() and not is_saved_dataset(path):  # a dataset repository as published: data/<split>-*.parquet ...
        yield from _load_dataset(source, split, f"{path}[{split}]")
    elif path.is_dir():
        dataset = load_saved(path)
        if hasattr(dataset, "keys"):  # a DatasetDict
            if split not in dataset:
                raise DataError(f"{path}: no split {split!r} (has {sorted(dataset.keys())})")
            dataset = dataset[split]
            path = f"{path}[{split}]"
        for i, row in enumerate(dataset):  # a lone saved Dataset has no splits: its rows whatever the split
            yield f"{path}:row {i}", row
    elif "/" in source and not source.startswith((".", "/")) and not path.suffix:
        yield from _load_dataset(source, split, f"{source}[{split}]")
    else:
        raise DataError(f"{source}: no such file or directory")


COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}  # what datasets' json loader also reads (stdlib modules)


def _open(path: Path, compression: str | None):
    if compression is None:
        return open(path, "rb")
    import importlib

    return importlib.import_module(COMPRESSED[compression]).open(path, "rb")


def _checked_read(path: Path, compression: str | None, reader) -> Iterator[tuple[str, Any]]:
    """``reader``'s rows; a damaged or truncated compressed file is one line naming it (not zlib's traceback)."""
    try:
        yield from reader(path, compression)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile, lzma.LZMAError and bz2's are OSErrors; a cut file EOFError
        if compression is None:
            raise
        raise DataError(f"{path}: not a readable {compression} file ({type(err).__name__}: {str(err)[:120]})") from None


def is_saved_dataset(path: Path) -> bool:
    """A folder written by ``save_to_disk`` (a DatasetDict or a Dataset), not a repository of data files."""
    return any((path / name).is_file() for name in ("dataset_dict.json", "state.json", "dataset_info.json"))


def has_splits(source: str) -> bool:
    """Whether ``source`` can hold named splits (a dataset folder or name), unlike a single file."""
    return not Path(source).is_file()


def _load_dataset(source: str, split: str, where: str) -> Iterator[tuple[str, Any]]:
    """``datasets.load_dataset`` of a local dataset repository (its data files, split by name) or a hub name."""
    from datasets import load_dataset

    try:
        dataset = load_dataset(source, split=split)
    except (OSError, ValueError, ConnectionError, IndexError, KeyError) as err:  # offline, unknown name or split ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(f"{source}: not loadable as a dataset for split {split!r} ({type(err).__name__}: {first[:200]})") from None
    for i, row in enumerate(dataset):
        yield f"{where}:row {i}", row


def load_saved(path: Path):
    """``datasets.load_from_disk``, its failures as one line naming the folder (an empty split's folder
    holds no data file, and datasets fails with an IndexError)."""
    from datasets import load_from_disk

    try:
        return load_from_disk(str(path))
    except FileNotFoundError as err:  # a folder, but not one written by save_to_disk
        raise DataError(f"{path}: a folder that is not a saved dataset (datasets.save_to_disk): {err}") from None
    except IndexError:
        raise DataError(f"{path}: a saved dataset with an empty split (no rows, no data file); drop the split or "
                        "fill it") from None
    except (OSError, ValueError, KeyError) as err:  # a damaged dataset_info.json / state.json / arrow file
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(f"{path}: not a readable saved dataset ({type(err).__name__}: {first[:200]})") from None


def json_error(err: json.JSONDecodeError, text: str) -> str:
    """``msg at column N`` of a one-line document (``at end of line`` when the row stops short).

    Only for a single line with its line break already removed: ``json`` counts a trailing newline
    as a second line, and would report a row cut short as being at "line 2 column 1".
    """
    where = "at end of line" if err.pos >= len(text) else f"at column {err.pos + 1}"
    return f"{err.msg} {where}"


def decode_utf8(raw: bytes, path: Path, line_no: int | None = None) -> str:
    """``raw`` as UTF-8 text, else a ``DataError`` naming the file, the line and the offending byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if line_no is None:  # a whole file: find the line of the bad byte
            line_no = raw.count(b"\n", 0, err.start) + 1
            column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        else:
            column = err.start + 1
        byte = raw[err.start : err.start + 1].hex()
        raise DataError(f"{path}:{line_no}: not valid UTF-8 (byte 0x{byte} at byte column {column}); re-encode the file as UTF-8") from None


def _jsonl(path: Path, compression: str | None = None) -> Iterator[tuple[str, Any]]:
    with _open(path, compression) as f:  # bytes, decoded per line, so a bad byte is reported with its line
        for line_no, raw in enumerate(f, 1):
            try:
                line = decode_utf8(raw, path, line_no)
            except DataError as err:  # a bad row like any other (on_bad_row: skip drops it)
                yield f"{path}:{line_no}", err
                continue
            if line_no == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte order mark (some editors write one)
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield f"{path}:{line_no}", DataError(f"{path}:{line_no}: invalid JSON ({json_error(err, line)})")
                continue
            except (ValueError, RecursionError) as err:  # an integer past Python's 4300-digit limit, nesting too deep
                yield f"{path}:{line_no}", DataError(f"{path}:{line_no}: unreadable JSON ({type(err).__name__}: {str(err)[:120]})")
                continue
            yield f"{path}:{line_no}", row


def read_jsonl(path: str | Path) -> list[dict]:
    """Every row of a jsonl file (blank lines skipped), for files the project writes itself (demos, tests).

    The first bad line raises its ``DataError`` (``file:line: ...``); a user's training data goes
    through ``iter_rows`` instead, which reports each bad row and lets ``on_bad_row`` decide.
    """
    rows = []
    for _, row in _jsonl(Path(path)):
        if isinstance(row, DataError):
            raise row
        rows.append(row)
    return rows


def _json(path: Path, compression: str | None = None) -> Iterator[tuple[str, Any]]:
    with _open(path, compression) as f:
        raw = f.read()
    try:
        data = json.loads(decode_utf8(raw, path).removeprefix("\ufeff"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
    except (ValueError, RecursionError) as err:  # an integer past Python's 4300-digit limit, nesting too deep
        raise DataError(f"{path}: unreadable JSON ({type(err).__name__}: {str(err)[:120]})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
    for i, row in enumerate(data):
        yield f"{path}:row {i}", row


def _parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(f"{path}: not a readable parquet file ({str(err).splitlines()[0]})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}:row {i}", row
