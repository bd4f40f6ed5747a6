"""Several training sources mixed by weight: which pairs of each source the mixed training set holds.

Semantics: a source's ``weight`` is its share of the mixed training set (weights are normalised, so
``[3, 1]`` and ``[0.75, 0.25]`` are the same mix). The mixed set has ``mix_size`` pairs; by default
the largest size at which no source repeats a pair, ``min_i(n_i / share_i)`` (the source that runs
out first is used whole, the others are subsampled). A ``mix_size`` above what a source holds
repeats that source: whole passes, then a seeded subset. Shares become counts by largest remainder
(they sum to ``mix_size`` exactly), and the subset is drawn by ``seed``, so the same sources, weights
and seed always give the same pairs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from lit_align.errors import ConfigError, check_number


@dataclass
class DataSource:
    """One source of preference rows in a mix (``PreferenceDataModule(sources=[...])``).

    Args:
        path: A .jsonl / .json / .parquet file, a save_to_disk folder, a dataset repository folder
            (data/<split>-*.parquet, as on the hub) or a dataset name.
        split: The training split (folders and names only).
        val_split: A split of the same dataset to validate on (e.g. test_prefs); None: none from this source.
        weight: This source's share of the mixed training set (normalised over all sources).
    """

    path: str
    split: str = "train"
    val_split: str | None = None
    weight: float = 1.0

    def label(self) -> str:
        return f"{self.path}[{self.split}]"


def mix_counts(sizes: list[int], weights: list[float], mix_size: int | None) -> list[int]:
    """Pairs taken from each source: ``weights`` normalised to shares of ``mix_size`` (or of the largest
    mix without repeats), rounded by largest remainder so that they sum to the total exactly."""
    for i, w in enumerate(weights):
        check_number(f"sources[{i}].weight", w, 0, low_open=True)
    total_w = math.fsum(weights)
    shares = [w / total_w for w in weights]
    if mix_size is None:
        mix_size = math.floor(min(n / s for n, s in zip(sizes, shares)) + 1e-9)
    if mix_size < 1:
        raise ConfigError(f"the mix of sizes {sizes} with weights {weights} holds no pair; set mix_size")
    exact = [mix_size * s for s in shares]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))  # largest remainder, ties by order
    for i in order[: mix_size - sum(counts)]:
        counts[i] += 1
    return counts


def pick(n: int, count: int, seed: int, source: int) -> list[int]:
    """``count`` positions of a source of ``n`` pairs: every position ``count // n`` times, then a seeded
    subset of ``count % n`` of them (in order, so the pick of one source does not depend on the others)."""
    rng = random.Random(f"mix:{seed}:{source}")  # str seeds are hashed deterministically (not by PYTHONHASHSEED)
    rest = sorted(rng.sample(range(n), count % n))
    return [i for _ in range(count // n) for i in range(n)] + rest
