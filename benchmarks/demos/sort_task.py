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


EDITS = ("swap", "change", "drop")


def near_miss(digits: list[int], rng: random.Random, edits: tuple[str, ...] = EDITS) -> str:
    """A wrong answer that differs from the right one in a single small edit."""
    right = sorted(digits)
    while True:
        wrong = list(right)
        edit = rng.choice(edits)
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


def digits_of(prompt: str) -> list[int]:
    return [int(t) for t in prompt.removeprefix("sort:").split()]


def label_own_mistakes(rows: list[dict], outputs: list[str], seed: int = 0) -> tuple[list[dict], int]:
    """Preference pairs from a model's own answers, labelled by the verifier (on-policy negatives).

    ``rejected`` becomes the model's answer where it is wrong but well-formed (as many numbers as
    the right answer), else a one-digit near miss of the same length. Same-length negatives matter:
    with shorter or longer rejected answers DPO learns the length, not the sorting (measured: the
    tuned model then pads or truncates its answers). Returns the rows and how many are the model's own.
    """
    rng = random.Random(seed)
    labelled, own = [], 0
    for row, output in zip(rows, outputs):
        answer, tokens = row["answer"], output.split()
        if " ".join(tokens) != answer and len(tokens) == len(answer.split()) and all(t.isdigit() for t in tokens):
            rejected, own = " ".join(tokens), own + 1
        else:
            rejected = near_miss(digits_of(row["prompt"]), rng, edits=("change",))
        labelled.append({**row, "chosen": answer, "rejected": rejected})
    return labelled, own
