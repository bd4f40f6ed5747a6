"""MT-Bench files (FastChat llm_judge formats): questions, model answers, reference answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.base import read_jsonl

# FastChat gen_model_answer.py temperature_config: creative categories sample, exact ones are greedy.
MT_BENCH_TEMPERATURES: dict[str, float] = {
    "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0,
    "coding": 0.0, "reasoning": 0.0, "stem": 0.1, "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7
"""Categories not in the table (FastChat's default)."""
NEED_REF_CATEGORIES = ("math", "reasoning", "coding")
"""Judged with a reference answer (FastChat NEED_REF_CATS)."""


def load_questions(path: str | Path) -> list[dict[str, Any]]:
    """``{"question_id", "category", "turns": [str, ...]}`` rows, checked field by field."""
    questions, seen = [], set()
    for line_no, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line_no}: expected a JSON object")
        for key, kind in (("question_id", (int, str)), ("category", str), ("turns", list)):
            if not isinstance(row.get(key), kind):
                raise ValueError(f"{path}:{line_no}: field {key!r} missing or not {getattr(kind, '__name__', 'int/str')}")
        if not row["turns"] or not all(isinstance(t, str) for t in row["turns"]):
            raise ValueError(f"{path}:{line_no}: field 'turns' must be a non-empty list of strings")
        if row["question_id"] in seen:
            raise ValueError(f"{path}:{line_no}: duplicate question_id {row['question_id']!r}")
        seen.add(row["question_id"])
        questions.append(row)
    return questions


def load_answers(path: str | Path) -> dict[Any, list[str]]:
    """FastChat answer files (model answers, reference answers): question_id -> choices[0].turns."""
    answers = {}
    for line_no, row in read_jsonl(path):
        try:
            turns = row["choices"][0]["turns"]
            qid = row["question_id"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{path}:{line_no}: expected question_id and choices[0].turns") from None
        if not all(isinstance(t, str) for t in turns):
            raise ValueError(f"{path}:{line_no}: choices[0].turns must be strings")
        answers[qid] = turns
    return answers
