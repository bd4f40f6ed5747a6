"""The training and validation splits from checked sources: which sources, held-out pairs, the mix,
duplicates and validation pairs that are also training pairs."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from lit_align.data.mixing import DataSource, mix_counts, pick
from lit_align.data.rows import Part
from lit_align.data.sources import DataError, has_splits
from lit_align.data.tokenize import TokenizedPair
from lit_align.errors import ConfigError, check_number


def resolve_sources(train_path: str | None, train_split: str, val_path: str | None, val_split: str | None,
                    sources: list[DataSource] | None) -> list[DataSource]:
    """The training sources: ``sources``, or train_path as the only one (with val_split of the same
    dataset when no val_path is given)."""
    if sources:
        if train_path:
            raise ConfigError(f"give train_path ({train_path}) or sources, not both")
        out = []
        for i, s in enumerate(sources):
            try:
                out.append(s if isinstance(s, DataSource) else DataSource(**s))
            except TypeError as err:  # an unknown or missing key in a mapping given in code
                raise ConfigError(f"sources[{i}]: {err} (keys: path, split, val_split, weight)") from None
        for i, s in enumerate(out):  # every weight, also a lone source's (mix_counts sees only mixes)
            check_number(f"sources[{i}].weight", s.weight, 0, low_open=True)
            if s.val_split and not has_splits(s.path):
                raise ConfigError(f"sources[{i}].val_split {s.val_split!r}: {s.path} is a single file, which has no splits")
        return out
    if not train_path:
        raise ConfigError("no training data: set train_path (or sources)")
    own_val = val_split if not val_path else None  # without val_path, val_split names a split of train_path's dataset
    if own_val and not has_splits(train_path):
        raise ConfigError(f"val_split {own_val!r} without val_path takes the split from train_path, but {train_path} is a "
                          "single file, which has no splits: set val_path")
    if own_val and own_val == train_split:
        raise ConfigError(f"val_split and train_split are both {train_split!r}: validation would repeat the training data")
    return [DataSource(train_path, train_split, own_val)]


def hold_out(pairs: list[TokenizedPair], fraction: float, seed: int) -> tuple[list[TokenizedPair], list[TokenizedPair]]:
    """(train, val): a seeded ``fraction`` of the pairs (at least one) held out for validation."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, int(len(pairs) * fraction))])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def mix(parts: list[list[TokenizedPair]], weights: list[float], mix_size: int | None,
        seed: int) -> tuple[list[TokenizedPair], list[tuple[int, int]]]:
    """The mixed training pairs (lit_align.data.mixing states the semantics) and (taken, available) per source."""
    if len(parts) == 1 and mix_size is None:
        return list(parts[0]), [(len(parts[0]), len(parts[0]))]
    counts = mix_counts([len(p) for p in parts], weights, mix_size)
    out: list[TokenizedPair] = []
    for i, (pairs, count) in enumerate(zip(parts, counts)):
        out += [replace(pairs[j]) for j in pick(len(pairs), count, seed, i)]  # copies: a repeat gets its own index
    return out, [(c, len(p)) for c, p in zip(counts, parts)]


def sum_counts(parts: list[Part], pairs: int) -> Counter:
    """One split's counts over its sources, with the pairs it ends up with."""
    total = Counter()
    for part in parts:
        total.update({k: v for k, v in part.counts.items() if k != "pairs"})
    total["pairs"] = pairs
    return total


def key(pair: TokenizedPair) -> tuple:
    return tuple(pair.prompt_ids), tuple(pair.chosen_ids), tuple(pair.rejected_ids)


def check_overlap(train: list[TokenizedPair], val: list[TokenizedPair], counts: dict[str, Counter], allow: bool,
                  val_label: str = "validation data") -> None:
    """Count duplicate pairs within each split and validation pairs that are also training pairs; refuse
    validation data that is all training data (a copied or repeated file) unless ``allow``."""
    seen: set[tuple] = set()
    for name, pairs in (("train", train), ("val", val)):
        keys = [key(p) for p in pairs]
        duplicates = len(keys) - len(set(keys))
        if duplicates:
            counts[name]["duplicate_pairs"] = duplicates
        if name == "train":
            seen = set(keys)
    if not val:
        return
    shared = sum(key(p) in seen for p in val)
    if shared == len(val) and not allow:
        raise DataError(f"{val_label}: every one of the {len(val)} validation pairs is also a training pair (is the "
                        "validation data the training file?): validation metrics would be training metrics; give held-out data, or set "
                        "allow_val_in_train")
    if shared:
        counts["val"]["also_in_train"] = shared
