"""The shared workload: a tiny Llama-shaped model directory and a preference dataset of mixed lengths.

Both frameworks read the same files. Lengths vary a lot on purpose (prompts of 10 to 60 numbers),
as in real preference data, so padding has a cost and padding-free packing has something to save.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Shape:
    """Model and data sizes of one benchmark workload."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    pairs: int = 512
    max_length: int = 1024

    def params(self) -> int:
        """Parameter count N (tied embeddings counted once), for 6N / 8N FLOPs per token."""
        from lit_align.tiny_tokenizer import VOCAB_SIZE

        h, f = self.hidden_size, self.intermediate_size
        return VOCAB_SIZE * h + self.num_layers * (4 * h * h + 3 * h * f + 2 * h) + h


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Sorting pairs: prompt 'sort: <numbers>', chosen the sorted list, rejected a corrupted one."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        numbers = [rng.randrange(100) for _ in range(rng.randint(10, 60))]
        chosen = sorted(numbers)
        rejected = list(chosen)
        for _ in range(rng.randint(1, 3)):  # swap a few entries, or drop one: same length scale
            i, j = rng.randrange(len(rejected)), rng.randrange(len(rejected))
            rejected[i], rejected[j] = rejected[j], rejected[i]
        if rng.random() < 0.3:
            rejected.pop(rng.randrange(len(rejected)))
        if rejected == chosen:
            rejected.pop()
        rows.append({"prompt": "sort: " + " ".join(map(str, numbers)) + "\n",
                     "chosen": " ".join(map(str, chosen)), "rejected": " ".join(map(str, rejected))})
    return rows


def prepare(workdir: Path, shape: Shape, seed: int = 0) -> dict[str, Path]:
    """Write ``model/`` (save_tiny) and ``train.jsonl``; idempotent."""
    from lit_align.models import save_tiny

    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "model"
    if not (model / "config.json").exists():
        save_tiny(model, hidden_size=shape.hidden_size, num_layers=shape.num_layers, num_heads=shape.num_heads,
                  intermediate_size=shape.intermediate_size, max_position_embeddings=shape.max_length, seed=seed)
    train = workdir / "train.jsonl"
    if not train.exists():
        train.write_text("".join(json.dumps(r) + "\n" for r in make_rows(shape.pairs, seed)))
    return {"model": model, "train": train}


def sample_order(n: int, seed: int = 0) -> list[int]:
    """The order lit-align's DistributedSampler(shuffle=True, seed) visits the pairs in epoch 0.

    TRL gets the rows in this order with a sequential sampler, so both see the same batches.
    """
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.randperm(n, generator=g).tolist()


def tokens_per_step(train: Path, batch_size: int, steps: int, seed: int = 0) -> list[int]:
    """TRL's count per step: non-pad tokens of the chosen and rejected rows (the prompt counted twice).

    Computed from the pairs, not from a layout, so packed or prompt-shared runs are credited
    exactly the work of the padded ones.
    """
    from lit_align.tiny_tokenizer import build_tokenizer

    tok = build_tokenizer()
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    order = sample_order(len(rows), seed)
    sizes = []
    for row in rows:
        p = len(tok(row["prompt"], add_special_tokens=False)["input_ids"])
        c = len(tok(row["chosen"], add_special_tokens=False)["input_ids"]) + 1  # + EOS
        r = len(tok(row["rejected"], add_special_tokens=False)["input_ids"]) + 1
        sizes.append(2 * p + c + r)
    per_epoch = len(rows) // batch_size
    return [sum(sizes[i] for i in order[(s % per_epoch) * batch_size:(s % per_epoch + 1) * batch_size]) for s in range(steps)]
