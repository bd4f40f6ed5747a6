"""The embedded default task: sort a short list of digits.

Every prompt has exactly one correct answer, so a program can verify a model's output, and the
rejected completion of each pair is a near miss (two neighbours swapped, one digit changed, or one
dropped): the kind of pair on which preference tuning has to learn something specific.
"""

from __future__ import annotations

import json
import random
from pathlib import Path


def _answer(digits: list[int]) -> str:
    return " ".join(map(str, sorted(digits)))


def near_miss(digits: list[int], rng: random.Random) -> str:
    """A wrong answer that differs from the right one in a single small edit."""
    right = sorted(digits)
    while True:
        wrong = list(right)
        edit = rng.choice(("swap", "change", "drop"))
        i = rng.randrange(len(wrong))
        if edit == "swap" and i + 1 < len(wrong):
            wrong[i], wrong[i + 1] = wrong[i + 1], wrong[i]
        elif edit == "change":
            wrong[i] = (wrong[i] + rng.choice((-1, 1))) % 10
        elif edit == "drop" and len(wrong) > 1:
            del wrong[i]
        if wrong != right:
            return " ".join(map(str, wrong))


def make_pairs(n: int, seed: int = 0, min_len: int = 3, max_len: int = 6) -> list[dict[str, str]]:
    """``n`` rows of {"prompt", "chosen", "rejected", "answer"} in the explicit-prompt format."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        digits = [rng.randrange(10) for _ in range(rng.randint(min_len, max_len))]
        prompt = "sort: " + " ".join(map(str, digits))
        rows.append({"prompt": prompt, "chosen": _answer(digits), "rejected": near_miss(digits, rng), "answer": _answer(digits)})
    return rows


def write_task(directory: str | Path, train: int = 4000, val: int = 200, test: int = 200, seed: int = 0) -> dict[str, Path]:
    """Write train / val / test jsonl files (disjoint seeds) and return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for offset, (split, n) in enumerate((("train", train), ("val", val), ("test", test))):
        path = directory / f"{split}.jsonl"
        rows = make_pairs(n, seed=seed * 1000 + offset)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths[split] = path
    return paths
