"""The shared workload: a Llama-shaped model directory and a preference dataset of mixed lengths.

Both frameworks read the same files. Sorting pairs: prompt ``sort: <numbers>``, chosen the sorted
list, rejected a corrupted one (byte-level tokenizer: one token per byte). Two length regimes:

- default: prompts of 10 to 60 numbers (rows of about 60 to 360 tokens), lengths varying a lot as
  in real preference data, so padding has a cost and padding-free packing has something to save;
- ``seq_len=L``: every ``prompt + chosen + EOS`` is drawn uniformly in [0.8 L, L] tokens (the
  rejected row is as long or one number shorter), never truncated at ``max_length = L``; prompt and
  completion are each about half of it, so prompt sharing saves about a quarter of the tokens.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.shapes import Shape

MAX_POSITIONS = 4096
"""max_position_embeddings of every benchmark model (one model directory serves 1024 and 2048)."""


def _corrupt(chosen: list[int], rng: random.Random) -> list[int]:
    rejected = list(chosen)
    for _ in range(rng.randint(1, 3)):  # swap a few entries, or drop one: same length scale
        i, j = rng.randrange(len(rejected)), rng.randrange(len(rejected))
        rejected[i], rejected[j] = rejected[j], rejected[i]
    if rng.random() < 0.3:
        rejected.pop(rng.randrange(len(rejected)))
    if rejected == chosen:
        rejected.pop()
    return rejected


def _row(numbers: list[int], rng: random.Random) -> dict:
    chosen = sorted(numbers)
    return {"prompt": "sort: " + " ".join(map(str, numbers)) + "\n", "chosen": " ".join(map(str, chosen)),
            "rejected": " ".join(map(str, _corrupt(chosen, rng)))}


def make_rows(n: int, seed: int = 0, seq_len: int | None = None, numbers_range: tuple[int, int] = (10, 60)) -> list[dict]:
    """``n`` sorting pairs; ``seq_len`` None: ``numbers_range`` numbers each, else rows of 0.8 to 1.0 seq_len tokens."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        if seq_len is None:
            numbers = [rng.randrange(100) for _ in range(rng.randint(*numbers_range))]
        else:
            # tokens of prompt + chosen + EOS = len("sort: ") + 2 (S + n - 1) + len("\n") + 1 = 2 S + 2 n + 6,
            # S the digits of the n numbers; add numbers while the row stays within the drawn target
            target, numbers, digits = rng.randint(int(0.8 * seq_len), seq_len), [], 0
            while True:
                x = rng.randrange(100)
                if 2 * (digits + len(str(x))) + 2 * (len(numbers) + 1) + 6 > target:
                    break
                numbers.append(x)
                digits += len(str(x))
            if len(numbers) < 2:
                raise ValueError(f"seq_len {seq_len} is too short for a sorting pair")
        rows.append(_row(numbers, rng))
    return rows


@dataclass(frozen=True)
class Paths:
    """Where one workload's files are."""

    model: Path
    """Hugging Face directory written by ``save_tiny`` (keyed by shape and seed: reusable across lengths), or
    the dense conversion of the real model's GGUF file."""
    train: Path
    """``train.jsonl`` of explicit prompt / chosen / rejected rows."""


def prepare(workdir: Path, shape: Shape, pairs: int, seq_len: int | None, seed: int = 0, real: bool = False,
            numbers_range: tuple[int, int] = (10, 60)) -> Paths:
    """Write the model and the data under ``workdir`` unless already there (file names carry their settings).

    ``real``: the model is SmolLM2-135M-Instruct's dense conversion (``lit_align.models.SmolLM2``, written
    once into the GGUF cache), read as a plain Hugging Face directory by both frameworks.
    """
    from lit_align.models import SmolLM2, save_tiny

    workdir.mkdir(parents=True, exist_ok=True)
    if real:
        model = SmolLM2()._cached_dir()
    else:
        key = hashlib.sha256(json.dumps([shape.to_json(), seed, MAX_POSITIONS]).encode()).hexdigest()[:10]
        model = workdir / f"model-{key}"
        if not (model / "config.json").exists():
            save_tiny(model, max_position_embeddings=MAX_POSITIONS, seed=seed, **shape.tiny_kwargs())
    span = "" if tuple(numbers_range) == (10, 60) else f"-n{numbers_range[0]}_{numbers_range[1]}"
    train = workdir / f"train-{pairs}-{seq_len or 'mixed'}{span}-{seed}.jsonl"
    if not train.exists():
        train.write_text("".join(json.dumps(r) + "\n" for r in make_rows(pairs, seed, seq_len, numbers_range)))
    return Paths(model, train)


def sample_order(n: int, seed: int = 0) -> list[int]:
    """The order lit-align's DistributedSampler(shuffle=True, seed) visits the pairs in epoch 0.

    TRL gets the rows in this order with a sequential sampler, so both see the same batches.
    """
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.randperm(n, generator=g).tolist()


def pair_lengths(train: Path, tokenizer_dir: Path | None = None) -> list[tuple[int, int, int]]:
    """(prompt, chosen + EOS, rejected + EOS) tokens of each pair, in file order, with the byte tokenizer
    or the one saved in ``tokenizer_dir`` (a real model's)."""
    if tokenizer_dir is None:
        from lit_align.models.tiny_tokenizer import build_tokenizer

        tok = build_tokenizer()
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    from lit_align.data.sources import read_jsonl  # here: the TRL child imports this module, and lit_align.data pulls in Lightning

    rows = read_jsonl(train)
    return [(count(r["prompt"]), count(r["chosen"]) + 1, count(r["rejected"]) + 1) for r in rows]


@dataclass(frozen=True)
class StepWork:
    """What each optimizer step holds, counted as TRL lays it out (chosen row, rejected row)."""

    tokens: list[int]
    """Non-pad tokens per step (the prompt counted twice): TRL's tokens/s numerator."""
    sum_sq: list[int]
    """Sum over the step's 2B rows of (row length)^2, for attention FLOPs."""
    longest: int
    """Longest row in the data (must not exceed max_length: no truncation)."""


def step_work(train: Path, batch_size: int, steps: int, seed: int = 0, tokenizer_dir: Path | None = None) -> StepWork:
    """Per-step work from the pairs, not from a layout, so packed or prompt-shared runs are credited
    exactly the work of the padded ones."""
    lengths = pair_lengths(train, tokenizer_dir)
    order = sample_order(len(lengths), seed)
    per_epoch = len(lengths) // batch_size
    tokens, sum_sq = [], []
    for s in range(steps):
        batch = [lengths[i] for i in order[(s % per_epoch) * batch_size:(s % per_epoch + 1) * batch_size]]
        tokens.append(sum(2 * p + c + r for p, c, r in batch))
        sum_sq.append(sum((p + c) ** 2 + (p + r) ** 2 for p, c, r in batch))
    return StepWork(tokens, sum_sq, max(p + max(c, r) for p, c, r in lengths))
