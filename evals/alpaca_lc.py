"""Length-controlled AlpacaEval metrics for a set of annotations (see ``evals.length_control``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from evals.alpaca_metrics import load_annotations
from evals.length_control import length_controlled_winrate


def load_difficulty(path: str | Path) -> tuple[dict[str, float], dict[int, float]]:
    """instruction_difficulty keyed by instruction text and/or by instruction index."""
    by_text, by_index = {}, {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "instruction_difficulty" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: needs an 'instruction_difficulty' column (found {reader.fieldnames})")
        for line_no, row in enumerate(reader, 2):
            try:
                value = float(row["instruction_difficulty"])
            except ValueError:
                raise ValueError(f"{path}:{line_no}: instruction_difficulty {row['instruction_difficulty']!r} is not a number") from None
            if row.get("instruction"):
                by_text[row["instruction"]] = value
            if row.get("index", "").strip().lstrip("-").isdigit():
                by_index[int(row["index"])] = value
    return by_text, by_index


def lc_metrics(rows: list[dict[str, Any]], difficulty_file: str | None = None,
               gamed_annotations_files: list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """The full GLM when both difficulty and gamed annotations are given, the length-only GLM otherwise.

    Metric names say which: ``length_controlled_winrate`` (official formula) or
    ``length_controlled_winrate_length_only_glm`` (not comparable with the official leaderboard).
    """
    if len(rows) < 10:
        return {"lc_glm": "not fitted (fewer than 10 judged rows)"}
    prefs = np.array([r["preference"] for r in rows], float)
    model_len = np.array([len(r["output_2"]) for r in rows], float)
    base_len = np.array([len(r["output_1"]) for r in rows], float)
    if difficulty_file and gamed_annotations_files:
        by_text, by_index = load_difficulty(difficulty_file)
        difficulty = []
        for r in rows:
            value = by_text.get(r["instruction"], by_index.get(r.get("index", -1)))
            if value is None:
                raise ValueError(f"{difficulty_file}: no difficulty for instruction {r['instruction'][:60]!r}")
            difficulty.append(value)
        gamed = []
        for path in gamed_annotations_files:
            by_instruction = {a["instruction"]: a for a in load_annotations(path)}
            missing = [r["instruction"] for r in rows if r["instruction"] not in by_instruction]
            if missing:
                raise ValueError(f"{path}: no annotation for instruction {missing[0][:60]!r}")
            g = [by_instruction[r["instruction"]] for r in rows]
            gamed.append((np.array([a["preference"] if a["preference"] is not None else np.nan for a in g], float),
                          np.array([len(a["output_2"]) for a in g], float), np.array([len(a["output_1"]) for a in g], float)))
        result = length_controlled_winrate(prefs, model_len, base_len, np.array(difficulty), gamed, seed=seed)
        key = "length_controlled_winrate"
    else:
        result = length_controlled_winrate(prefs, model_len, base_len, seed=seed)
        key = "length_controlled_winrate_length_only_glm"
    return {key: result.win_rate, "lc_glm": result.kind, **{f"lc_{k}": v for k, v in result.weights.items()}}
