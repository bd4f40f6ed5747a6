"""Programmatic verifier tasks: generate greedily and check each answer against a known one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.base import EvalTask, read_jsonl, write_json_atomic, write_jsonl_atomic
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
        """
        Args:
            data_path: jsonl file of {"prompt", "answer"} rows.
            name: Name under which metrics are reported.
            max_new_tokens: Generation budget per answer.
            batch_size: Prompts generated together.
            limit: Evaluate only the first N prompts.
        """
        self.data_path = data_path
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.limit = limit

    def load(self) -> list[dict[str, Any]]:
        rows = []
        for line_no, row in read_jsonl(self.data_path):
            for key in ("prompt", "answer"):
                if not isinstance(row, dict) or not isinstance(row.get(key), str):
                    raise ValueError(f"{self.data_path}:{line_no}: field {key!r} missing or not a string")
            rows.append(row)
        return rows[: self.limit] if self.limit else rows

    def run(self, model, tokenizer, output_dir: Path) -> dict[str, Any]:
        rows = self.load()
        conversations = [[{"role": "user", "content": r["prompt"]}] for r in rows]
        answers = generate(model, tokenizer, conversations, self.max_new_tokens, 0.0, self.batch_size)
        correct = [normalise(a) == normalise(r["answer"]) for a, r in zip(answers, rows)]
        write_jsonl_atomic(output_dir / "answers.jsonl", [
            {"prompt": r["prompt"], "answer": r["answer"], "output": a, "correct": ok} for r, a, ok in zip(rows, answers, correct)
        ])
        metrics = {"accuracy": sum(correct) / max(len(rows), 1), "n": len(rows)}
        write_json_atomic(output_dir / "metrics.json", metrics)
        return metrics
