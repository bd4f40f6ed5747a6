"""Programmatic verifier tasks: generate greedily and check each answer against a known one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evals.base import EvalTask, write_json_atomic
from evals.generation import generate


def normalise(text: str) -> str:
    return " ".join(text.split())


class VerifierTask(EvalTask):
    """Exact-match accuracy on held-out prompts with one correct answer (whitespace-normalised).

    The data file is jsonl with ``prompt`` and ``answer`` (the demo task writes one). Answers are
    saved to ``answers.jsonl`` next to the task's metrics, one row per prompt.
    """

    def __init__(self, data_path: str, name: str = "verifier", max_new_tokens: int = 32,
                 batch_size: int = 64, limit: int | None = None) -> None:
        self.data_path = data_path
        """jsonl file of {"prompt", "answer"} rows."""
        self.name = name
        """Name under which metrics are reported."""
        self.max_new_tokens = max_new_tokens
        """Generation budget per answer."""
        self.batch_size = batch_size
        """Prompts generated together."""
        self.limit = limit
        """Evaluate only the first N prompts."""

    def load(self) -> list[dict[str, Any]]:
        rows = []
        with open(self.data_path) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{self.data_path}:{line_no}: invalid JSON ({err.msg})") from None
                for key in ("prompt", "answer"):
                    if not isinstance(row.get(key), str):
                        raise ValueError(f"{self.data_path}:{line_no}: field {key!r} missing or not a string")
                rows.append(row)
        return rows[: self.limit] if self.limit else rows

    def run(self, model, tokenizer, output_dir: Path) -> dict[str, Any]:
        rows = self.load()
        conversations = [[{"role": "user", "content": r["prompt"]}] for r in rows]
        answers = generate(model, tokenizer, conversations, self.max_new_tokens, 0.0, self.batch_size)
        correct = [normalise(a) == normalise(r["answer"]) for a, r in zip(answers, rows)]
        output_dir.mkdir(parents=True, exist_ok=True)
        with open(output_dir / "answers.jsonl", "w") as f:
            for r, a, ok in zip(rows, answers, correct):
                f.write(json.dumps({"prompt": r["prompt"], "answer": r["answer"], "output": a, "correct": ok}) + "\n")
        metrics = {"accuracy": sum(correct) / max(len(rows), 1), "n": len(rows)}
        write_json_atomic(output_dir / "metrics.json", metrics)
        return metrics
