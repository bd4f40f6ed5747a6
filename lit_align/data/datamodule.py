"""``PreferenceDataModule``: files or datasets in, padded ``PreferenceBatch`` out."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from typing import Literal

import lightning as L
from torch.utils.data import Dataset, DistributedSampler

from lit_align.data.collate import PairCollator
from lit_align.data.formats import Format, to_text_pair
from lit_align.data.sources import DataError, iter_rows
from lit_align.data.tokenize import TokenizedPair, tokenize_pair
from lit_align.errors import ConfigError, check_number
from lit_align.finite import FiniteSettings


def why_empty(counts: Counter, max_length: int, max_prompt_length: int) -> str:
    """The reason a split ended up with no pairs, from its counts."""
    if not counts["rows"]:
        return "the source has no rows"
    if counts["dropped_after_truncation"]:
        return (f"all {counts['dropped_after_truncation']} pairs were empty or identical after truncation to max_length "
                f"{max_length} / max_prompt_length {max_prompt_length}: raise max_length")
    return f"counts: {dict(counts)}"


class PairDataset(Dataset):
    """Tokenised pairs by position; a key ``(i, True)`` (from ``MarkedPaddingSampler``) returns pair i marked as padding."""

    def __init__(self, pairs: list[TokenizedPair]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, bool]) -> TokenizedPair:
        i, padding = key if isinstance(key, tuple) else (key, False)
        return replace(self.pairs[i], padding=True) if padding else self.pairs[i]


class MarkedPaddingSampler(DistributedSampler):
    """``DistributedSampler(drop_last=False)`` whose repeated samples are marked: yields ``(index, is_padding)``.

    To give every rank the same number of samples, DistributedSampler appends repeats of the first
    indices to a list of ``len(dataset)`` and deals it out round-robin: this rank's k-th sample is
    entry ``rank + k * num_replicas``, a repeat exactly when that entry is past ``len(dataset)``.
    Evaluation loaders use it so that every rank still runs the same batches (collectives stay
    matched) while metrics count each pair once.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool = False, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)

    def __iter__(self):
        n = len(self.dataset)
        for k, index in enumerate(super().__iter__()):
            yield index, self.rank + k * self.num_replicas >= n


class PreferenceDataModule(FiniteSettings, L.LightningDataModule):
    """Preference pairs from local jsonl / json / parquet files, a saved dataset folder or a dataset name.

    The tokenizer comes from the attached ``PreferenceModule`` (so the two always agree) unless a
    path is given. Loading uses ``StatefulDataLoader`` with an explicit ``DistributedSampler``, so a
    mid-epoch checkpoint resumes on exactly the next batch (run the Trainer with
    ``use_distributed_sampler=False``, as ``cli.py`` does). Validation / test loaders mark the pairs
    the sampler repeats to even out ranks (``MarkedPaddingSampler``), so metrics count each pair once.
    """

    def __init__(
        self,
        train_path: str,
        val_path: str | None = None,
        val_fraction: float = 0.0,
        format: Format = "auto",
        train_split: str = "train",
        val_split: str = "test",
        chat_template: bool = True,
        assistant_marker: str = "\n\nAssistant:",
        max_length: int = 512,
        max_prompt_length: int = 256,
        on_bad_row: Literal["error", "skip"] = "error",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pad_to_multiple_of: int = 8,
        limit: int | None = None,
        seed: int = 0,
        tokenizer: str | None = None,
        collator: type[PairCollator] = PairCollator,
    ) -> None:
        """
        Args:
            train_path: Training data: a .jsonl / .json / .parquet file, a save_to_disk folder, or a dataset
                name.
            val_path: Validation data (same kinds as train_path); if None, ``val_fraction`` of train is held
                out.
            val_fraction: Fraction of training rows held out for validation when no val_path is given (seeded).
            format: Row format: auto (by keys), explicit, conversational or implicit (HH-RLHF transcripts).
            train_split: Split name for dataset folders / names.
            val_split: Split name of val_path for dataset folders / names.
            chat_template: Wrap explicit string prompts in the tokenizer's chat template (conversational rows
                always are).
            assistant_marker: Implicit format: the prompt ends after the last occurrence of this marker.
            max_length: Token budget of prompt + completion (see data/tokenize.py for the truncation policy).
            max_prompt_length: Token budget of the prompt; longer prompts keep their end.
            on_bad_row: error: stop at the first malformed row, naming file, line and field; skip: count and
                drop it.
            batch_size: Pairs per batch and device (each pair is two rows of the forward).
            eval_batch_size: Pairs per validation batch.
            num_workers: DataLoader worker processes.
            pad_to_multiple_of: Round padded lengths up to this multiple (fewer distinct shapes).
            limit: Use only the first N rows of each split (quick runs).
            seed: Seed of the validation split and of the shuffling sampler.
            tokenizer: Tokenizer (HF directory or name) to use when no PreferenceModule is attached (standalone
                use); None: the attached module's tokenizer.
            collator: Collation class, built with (pad_token_id, pad_to_multiple_of): padded pairs (default) or
                a packed layout from lit_align.data.packing (PackedPairCollator, SharedPromptCollator).
        """
        super().__init__()
        self.train_path = train_path
        self.val_path = val_path
        self.val_fraction = val_fraction
        self.format = format
        self.train_split = train_split
        self.val_split = val_split
        self.chat_template = chat_template
        self.assistant_marker = assistant_marker
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.on_bad_row = on_bad_row
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else batch_size
        self.num_workers = num_workers
        self.pad_to_multiple_of = pad_to_multiple_of
        self.limit = limit
        self.seed = seed
        self.tokenizer_path = tokenizer
        self.collator = collator
        self.counts: dict[str, Counter] = {}
        self._check_settings()
        self.train_set: PairDataset | None = None
        self.val_set: PairDataset | None = None

    def _check_settings(self) -> None:
        """Refuse settings that cannot work, naming them (before any file is read)."""
        for key in ("batch_size", "eval_batch_size", "max_length", "max_prompt_length", "pad_to_multiple_of"):
            check_number(key, getattr(self, key), 1, integer=True)
        check_number("num_workers", self.num_workers, 0, integer=True)
        if self.limit is not None:
            check_number("limit", self.limit, 1, integer=True)
        if self.max_prompt_length > self.max_length:  # equal is fine: prompts are then cut at max_length only
            raise ConfigError(
                f"max_prompt_length ({self.max_prompt_length}) must not exceed max_length ({self.max_length}): "
                "max_length counts prompt and completion tokens together"
            )
        check_number("val_fraction", self.val_fraction, 0, 1, high_open=True)
        if self.val_path and self.val_fraction > 0:
            raise ConfigError(f"give val_path ({self.val_path}) or val_fraction ({self.val_fraction}), not both")
        if self.on_bad_row not in ("error", "skip"):
            raise ConfigError(f"on_bad_row must be 'error' or 'skip', got {self.on_bad_row!r}")

    def _tokenizer(self):
        if self.tokenizer_path:
            from transformers import AutoTokenizer

            from lit_align.models import from_pretrained

            return from_pretrained(AutoTokenizer, self.tokenizer_path, "tokenizer")
        if self.trainer is None or getattr(self.trainer.lightning_module, "tokenizer", None) is None:
            raise ValueError("PreferenceDataModule needs a tokenizer: attach it to a PreferenceModule or set tokenizer=")
        return self.trainer.lightning_module.tokenizer

    def load(self, source: str, split: str, tokenizer, name: str) -> list[TokenizedPair]:
        counts = self.counts.setdefault(name, Counter())
        pairs: list[TokenizedPair] = []
        extras_seen: set[tuple[bool, bool]] = set()
        for location, row in iter_rows(source, split):
            if self.limit is not None and counts["rows"] >= self.limit:
                break
            counts["rows"] += 1
            try:
                text = to_text_pair(row, self.format, tokenizer, self.chat_template, self.assistant_marker, location)
            except DataError:
                if self.on_bad_row == "error":
                    raise
                counts["bad_rows_skipped"] += 1
                continue
            extras = (text.scores is not None, text.ref_logps is not None)
            if extras_seen and extras not in extras_seen:
                raise DataError(f"{location}: score / ref_*_logps columns must be present on every row or none")
            extras_seen.add(extras)
            pair = tokenize_pair(text, tokenizer, len(pairs), self.max_length, self.max_prompt_length, counts)
            if pair is not None:
                pairs.append(pair)
        if not pairs:
            raise DataError(f"{source}: no usable preference pairs ({why_empty(counts, self.max_length, self.max_prompt_length)})")
        counts["pairs"] = len(pairs)
        return pairs

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        tokenizer = self._tokenizer()
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        train = self.load(self.train_path, self.train_split, tokenizer, "train")
        if self.val_path:
            val = self.load(self.val_path, self.val_split, tokenizer, "val")
        elif self.val_fraction > 0:
            order = list(range(len(train)))
            random.Random(self.seed).shuffle(order)
            n_val = max(1, int(len(train) * self.val_fraction))
            held = set(order[:n_val])
            val = [p for i, p in enumerate(train) if i in held]
            train = [p for i, p in enumerate(train) if i not in held]
            if not train:
                raise DataError(f"{self.train_path}: val_fraction {self.val_fraction} holds out all {len(val)} pairs, leaving none to train on")
        else:
            val = []
        # index = position in its split, so per-example caches can key on it
        for split in (train, val):
            for i, pair in enumerate(split):
                pair.index = i
        self.train_set, self.val_set = PairDataset(train), PairDataset(val) if val else None
        self.report()

    def report(self) -> None:
        for name, counts in self.counts.items():
            details = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k not in ("rows", "pairs"))
            print(f"[data] {name}: {counts['pairs']} pairs from {counts['rows']} rows" + (f" ({details})" if details else ""))

    def tokenized_splits(self) -> dict[str, list[TokenizedPair]]:
        """The set-up splits' pairs ("train", "val"), e.g. for a reference that scores them all once."""
        sets = {"train": self.train_set, "val": self.val_set}
        return {name: list(dataset.pairs) for name, dataset in sets.items() if dataset is not None}

    def padded_collator(self) -> PairCollator:
        """The padded layout's collator for this data (whatever ``collator`` the loaders use)."""
        return PairCollator(self.pad_token_id, self.pad_to_multiple_of)

    def _loader(self, dataset: PairDataset, batch_size: int, shuffle: bool, mark_padding: bool = False):
        from torchdata.stateful_dataloader import StatefulDataLoader

        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        if mark_padding:  # evaluation: repeats run but weigh 0 in metrics (PreferenceBatch.is_padding)
            sampler = MarkedPaddingSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed)
        else:  # training: repeats are ordinary samples, as with any DistributedSampler
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed, drop_last=False)
        return StatefulDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=self.collator(self.pad_token_id, self.pad_to_multiple_of),
            num_workers=self.num_workers,
        )

    def train_dataloader(self):
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False, mark_padding=True) if self.val_set else []

    def test_dataloader(self):
        return self.val_dataloader()
