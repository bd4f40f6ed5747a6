"""On-disk cache of judge replies, keyed by the full request, append-only with fsync.

A judgment costs money and time; a crash or a rerun must never pay for it twice. Each answered
request is appended as one JSON line and fsynced before the caller sees the reply, so a kill loses at
most the requests in flight. A torn last line (killed mid-write) is ignored on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def request_key(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the request body (model, messages and every sampling knob).

    The endpoint URL and the key are deliberately not part of it: moving the same judge model to
    another host (or restarting a local server on a new port) keeps its answers valid.
    """
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class JudgeCache:
    """Append-only jsonl of ``{"key", "response"}``; the first answer stored for a key wins."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        """The jsonl file (created on first write)."""
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn final line after a kill: that request is simply re-sent
                if isinstance(row, dict) and "key" in row and "response" in row:
                    self._entries.setdefault(row["key"], row["response"])

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._entries.get(key)

    def put(self, key: str, response: dict[str, Any]) -> None:
        line = json.dumps({"key": key, "response": response}, ensure_ascii=False) + "\n"
        with self._lock:
            if key in self._entries:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._entries[key] = response
