"""Saved answers bound to the model that wrote them: a resumable store and the model's identity.

Answers are reused across runs into the same output folder (resume after a kill, rerun for free). They
are only valid for the weights and generation settings that produced them: evaluating checkpoint B into
checkpoint A's folder must not score A's answers. Each row therefore carries ``identity``, a hash of
the weights, the tokenizer's chat template and the generation settings, and a store holding rows of
another identity is refused with the way out named.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from evals.base import EvalError


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes): the weights' content, wherever they came from."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_identity(model: torch.nn.Module, tokenizer, settings: dict[str, Any]) -> str:
    """``weights:<16 hex>|gen:<16 hex>``: the weights' digest and a hash of the template and generation settings."""
    template = getattr(tokenizer, "chat_template", None)
    generation = json.dumps({"chat_template": template, **settings}, sort_keys=True, default=str)
    return f"weights:{weights_digest(model)[:16]}|gen:{hashlib.sha256(generation.encode()).hexdigest()[:16]}"


class AnswersOfAnotherModel(EvalError):
    """The answer file holds answers of other weights or generation settings."""


def item_inputs(item: dict[str, Any]) -> str:
    """A hash of what one item's answer was generated from (its turns and temperature), kept in its row.

    The store's identity covers the model and the task-wide settings; this covers each item's own inputs,
    so an answer is reused only for the same prompt at the same temperature (another question file with
    the same ids, or a per-category temperature override, must not reuse it).
    """
    inputs = json.dumps({"turns": item["turns"], "temperature": float(item["temperature"])}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(inputs.encode()).hexdigest()[:16]


class AnswerStore:
    """Append-only, fsynced jsonl of generated answers keyed by ``id``, so generation resumes.

    A kill mid-generation loses at most the batch being generated; a torn last line is ignored. After
    ``bind(identity)`` every row written carries it, and rows of another identity are refused.
    """

    def __init__(self, path: str | os.PathLike, id_key: str = "question_id") -> None:
        self.path = Path(path)
        """The jsonl file."""
        self.id_key = id_key
        """Field that identifies a row."""
        self.identity: str | None = None
        """The model identity bound to this store (``bind``)."""
        self.rows: dict[Any, dict[str, Any]] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # torn final line: regenerated
                    self.rows[row[id_key]] = row

    def bind(self, identity: str) -> None:
        """Use this store for the model ``identity``; refuse when it holds answers of another one."""
        others = sorted({str(row.get("identity")) for row in self.rows.values() if row.get("identity") != identity})
        if others:
            raise AnswersOfAnotherModel(
                f"{self.path} holds {len(self.rows)} answers of another model or other generation settings "
                f"(identity {others[0]}, this evaluation is {identity}); reusing them would score that model: "
                f"evaluate into a fresh --output_dir, or delete {self.path} to generate this model's answers here")
        self.identity = identity

    def check_inputs(self, items: list[dict[str, Any]]) -> None:
        """Refuse when a saved answer of one of ``items`` was generated from other inputs (``item_inputs``)."""
        stale = [it["id"] for it in items if it["id"] in self.rows and self.rows[it["id"]].get("inputs") != item_inputs(it)]
        if stale:
            raise AnswersOfAnotherModel(
                f"{self.path} holds answers generated from other prompts or temperatures ({self.id_key} {stale[0]!r}"
                f"{f' and {len(stale) - 1} more' if len(stale) > 1 else ''}); reusing them would score answers to "
                f"other inputs: evaluate into a fresh --output_dir, or delete {self.path} to generate them again here")

    def __contains__(self, item_id: Any) -> bool:
        return item_id in self.rows

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for row in rows:
                if self.identity is not None:
                    row = {**row, "identity": self.identity}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                self.rows[row[self.id_key]] = row
            f.flush()
            os.fsync(f.fileno())
