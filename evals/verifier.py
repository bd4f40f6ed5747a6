"""Programmatic verifier tasks: generate greedily and check each answer against a known one.

Two accuracies side by side: ``accuracy`` (strict: the whole reply, whitespace-normalised, is the
answer, i.e. content and format) and ``extracted_accuracy`` (the answer pulled out of the reply by
``extract``, i.e. content). A small chat model that says "2 + 3 = 5" to "Answer with just the number"
scores 0 strict and 1 extracted; reporting only the first measures the format, not the content.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from evals.base import EvalError, EvalTask, TaskFailed, read_jsonl, write_json_atomic, write_jsonl_atomic
from evals.sampling import generate

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
ANSWER_LINE = re.compile(r"answer\s*(?:is)?\s*[:=]\s*(.+)", re.I)


def normalise(text: str) -> str:
    return " ".join(text.split())


def _number(text: str) -> str | None:
    """A number's canonical spelling (``1,000`` -> ``1000``, ``2.50`` -> ``2.5``, ``-0`` -> ``0``); None if not one."""
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return str(int(value)) if value == int(value) else repr(value)


def extract_answer(output: str, how: str, pattern: str | None = None) -> str | None:
    """The answer in ``output`` by ``how``; None when there is none.

    ``last_number``: the last number in the reply; ``answer_line``: the text after the last
    ``Answer:`` (``answer is:``, ``Answer =``), the whole reply when there is no such line; ``regex``:
    group 1 (else the whole match) of the last match of ``pattern``; ``none``: the reply itself.
    """
    if how == "none":
        return output
    if how == "last_number":
        numbers = NUMBER.findall(output)
        return numbers[-1] if numbers else None
    if how == "answer_line":
        matches = ANSWER_LINE.findall(output)
        return matches[-1] if matches else output
    if how == "regex":
        matches = list(re.finditer(pattern or "", output))
        if not matches:
            return None
        last = matches[-1]
        return last.group(1) if last.re.groups else last.group(0)
    raise ValueError(f"unknown extraction {how!r}")


def same_answer(extracted: str | None, gold: str) -> bool:
    """Equal as numbers when both are numbers, else equal after whitespace normalisation (and a final period)."""
    if extracted is None:
        return False
    a, b = _number(extracted.strip().rstrip(".")), _number(gold.strip())
    if a is not None and b is not None:
        return a == b
    return normalise(extracted).rstrip(".") == normalise(gold).rstrip(".")


class VerifierTask(EvalTask):
    """Strict and extracted accuracy on held-out prompts with one correct answer.

    The data file is jsonl with ``prompt`` and ``answer`` (the demo task writes one). Answers are
    saved to ``answers.jsonl`` next to the task's metrics, one row per prompt, with what was extracted.
    """

    def __init__(self, data_path: str, name: str = "verifier", max_new_tokens: int = 32,
                 batch_size: int = 64, limit: int | None = None,
                 extract: Literal["answer_line", "last_number", "regex", "none"] = "answer_line",
                 pattern: str | None = None, template_system: bool = False) -> None:
        """
        Args:
            data_path: jsonl file of {"prompt", "answer"} rows.
            name: Name under which metrics are reported.
            max_new_tokens: Generation budget per answer.
            batch_size: Prompts generated together.
            limit: Evaluate only the first N prompts.
            extract: How extracted_accuracy finds the answer in a reply: answer_line (the text after the last
                "Answer:", else the whole reply), last_number, regex (``pattern``'s group 1 of its last match) or
                none (the whole reply). Numbers compare as numbers (1,000 = 1000.0).
            pattern: The regular expression of extract: regex.
            template_system: Keep the default system prompt the chat template inserts (SmolLM2's); False: none.
        """
        if extract == "regex":
            try:
                re.compile(pattern or "")
            except re.error as err:
                raise EvalError(f"VerifierTask: pattern {pattern!r} is not a regular expression ({err})") from None
            if not pattern:
                raise EvalError("VerifierTask: extract: regex needs a pattern")
        elif extract not in ("answer_line", "last_number", "none"):
            raise EvalError(f"VerifierTask: extract must be answer_line, last_number, regex or none, got {extract!r}")
        self.data_path = data_path
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.limit = limit
        self.extract = extract
        self.pattern = pattern
        self.template_system = template_system

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
        if not rows:  # an accuracy of 0 over no prompts would read as a measurement
            raise TaskFailed(f"{self.name}: {self.data_path} holds no prompts: there is no accuracy to report")
        conversations = [[{"role": "user", "content": r["prompt"]}] for r in rows]
        answers = generate(model, tokenizer, conversations, self.max_new_tokens, 0.0, self.batch_size,
                           template_system=self.template_system)
        strict = [normalise(a) == normalise(r["answer"]) for a, r in zip(answers, rows)]
        extracted = [extract_answer(a, self.extract, self.pattern) for a in answers]
        content = [same_answer(e, r["answer"]) for e, r in zip(extracted, rows)]
        write_jsonl_atomic(output_dir / "answers.jsonl", [
            {"prompt": r["prompt"], "answer": r["answer"], "output": a, "correct": ok, "extracted": e, "extracted_correct": c}
            for r, a, ok, e, c in zip(rows, answers, strict, extracted, content)
        ])
        n = max(len(rows), 1)
        metrics = {"accuracy": sum(strict) / n, "extracted_accuracy": sum(content) / n, "n": len(rows)}
        write_json_atomic(output_dir / "metrics.json", metrics)
        return metrics
