"""``PreferenceDataModule``: files or datasets in, padded ``PreferenceBatch`` out."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Literal

import lightning as L
from torch.utils.data import Dataset, DistributedSampler

from lit_align.data.collate import PairCollator
from lit_align.data.formats import Format
from lit_align.data.mixing import DataSource
from lit_align.data.rows import Part, keep_common_extras, read_part, tokenize_part
from lit_align.data.splits import check_overlap, hold_out, mix, resolve_sources, sum_counts
from lit_align.data.sources import DataError
from lit_align.data.tokenize import TokenizedPair
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
    """Preference pairs from local files, saved or published dataset folders, dataset names, or a weighted mix.

    Every row is read and checked when the module is built (before any tokenizer or model loads), so
    a bad row stops a run at once; tokenisation follows at setup. The tokenizer comes from the
    attached ``PreferenceModule`` (so the two always agree) unless a path is given. Loading uses
    ``StatefulDataLoader`` with an explicit ``DistributedSampler``, so a mid-epoch checkpoint resumes
    on exactly the next batch (run the Trainer with ``use_distributed_sampler=False``, as ``cli.py``
    does). Validation / test loaders mark the pairs the sampler repeats to even out ranks
    (``MarkedPaddingSampler``), so metrics count each pair once. docs/data-formats.md lists the formats.
    """

    def __init__(
        self,
        train_path: str | None = None,
        val_path: str | None = None,
        val_fraction: float = 0.0,
        format: Format = "auto",
        train_split: str = "train",
        val_split: str | None = None,
        sources: list[DataSource] | None = None,
        mix_size: int | None = None,
        chat_template: bool = True,
        assistant_marker: str = "\n\nAssistant:",
        max_length: int = 512,
        max_prompt_length: int = 256,
        on_bad_row: Literal["error", "skip"] = "error",
        allow_val_in_train: bool = False,
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
            train_path: Training data: a .jsonl / .json / .parquet file, a save_to_disk folder, a dataset
                repository folder (data/<split>-*.parquet, as published) or a dataset name. Or give ``sources``.
            val_path: Validation data (same kinds as train_path).
            val_fraction: Fraction of each training source's pairs held out for validation (seeded).
            format: Row format: auto (by keys and types), explicit, conversational or implicit (no prompt key:
                transcripts or message lists whose shared beginning is the prompt).
            train_split: Split of train_path (dataset folders / names), e.g. train_prefs.
            val_split: Validation split: of val_path (default test), or, without val_path, of the same dataset
                as train_path (e.g. test_prefs).
            sources: Several training sources mixed by weight (lit_align.data.DataSource: path, split,
                val_split, weight), instead of train_path; weights are shares of the mixed set.
            mix_size: Pairs in the mixed training set; None: the most without repeating any source's pairs.
            chat_template: Wrap explicit string prompts in the tokenizer's chat template (conversational rows
                always are).
            assistant_marker: Implicit transcripts: the prompt ends after the last occurrence of this marker.
            max_length: Token budget of prompt + completion (see data/tokenize.py for the truncation policy).
            max_prompt_length: Token budget of the prompt; longer prompts keep their end.
            on_bad_row: error: stop at the first malformed row, naming file, line and field; skip: count and
                drop it.
            allow_val_in_train: Accept validation data whose pairs all appear in the training data (otherwise
                refused: its metrics would be training metrics).
            batch_size: Pairs per batch and device (each pair is two rows of the forward).
            eval_batch_size: Pairs per validation batch.
            num_workers: DataLoader worker processes.
            pad_to_multiple_of: Round padded lengths up to this multiple (fewer distinct shapes).
            limit: Use only the first N rows of each split of each source (quick runs).
            seed: Seed of the validation split, of the mix and of the shuffling sampler.
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
        self.mix_size = mix_size
        self.chat_template = chat_template
        self.assistant_marker = assistant_marker
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.on_bad_row = on_bad_row
        self.allow_val_in_train = allow_val_in_train
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else batch_size
        self.num_workers = num_workers
        self.pad_to_multiple_of = pad_to_multiple_of
        self.limit = limit
        self.seed = seed
        self.tokenizer_path = tokenizer
        self.collator = collator
        self.counts: dict[str, Counter] = {}
        self.sources = resolve_sources(train_path, train_split, val_path, val_split, sources)
        self._check_settings()
        self.train_set: PairDataset | None = None
        self.val_set: PairDataset | None = None
        self.train_parts, self.val_parts = self.check_rows()

    def _check_settings(self) -> None:
        """Refuse settings that cannot work, naming them (before any file is read)."""
        for key in ("batch_size", "eval_batch_size", "max_length", "max_prompt_length", "pad_to_multiple_of"):
            check_number(key, getattr(self, key), 1, integer=True)
        check_number("num_workers", self.num_workers, 0, integer=True)
        for key in ("limit", "mix_size"):
            if getattr(self, key) is not None:
                check_number(key, getattr(self, key), 1, integer=True)
        if self.max_prompt_length > self.max_length:  # equal is fine: prompts are then cut at max_length only
            raise ConfigError(
                f"max_prompt_length ({self.max_prompt_length}) must not exceed max_length ({self.max_length}): "
                "max_length counts prompt and completion tokens together"
            )
        check_number("val_fraction", self.val_fraction, 0, 1, high_open=True)
        has_val = self.val_path or any(s.val_split for s in self.sources)
        if has_val and self.val_fraction > 0:
            raise ConfigError(f"give val_path / val_split ({self.val_path or self.val_split}) or val_fraction ({self.val_fraction}), not both")
        if self.on_bad_row not in ("error", "skip"):
            raise ConfigError(f"on_bad_row must be 'error' or 'skip', got {self.on_bad_row!r}")

    def check_rows(self) -> tuple[list[Part], list[Part]]:
        """Read and check every row of every split (no tokenizer): the first bad row raises its one-line DataError."""
        read = lambda path, split: read_part(path, split, self.format, self.assistant_marker, self.on_bad_row, self.limit)  # noqa: E731
        train = [read(s.path, s.split) for s in self.sources]
        val = [read(s.path, s.val_split) for s in self.sources if s.val_split]
        if self.val_path:
            val.append(read(self.val_path, self.val_split or "test"))
        keep_common_extras(train)
        keep_common_extras(val)
        return train, val

    def _tokenizer(self):
        if self.tokenizer_path:
            from transformers import AutoTokenizer

            from lit_align.models import from_pretrained

            return from_pretrained(AutoTokenizer, self.tokenizer_path, "tokenizer")
        if self.trainer is None or getattr(self.trainer.lightning_module, "tokenizer", None) is None:
            raise ValueError("PreferenceDataModule needs a tokenizer: attach it to a PreferenceModule or set tokenizer=")
        return self.trainer.lightning_module.tokenizer

    def _tokenize(self, part: Part, tokenizer) -> list[TokenizedPair]:
        pairs = tokenize_part(part, tokenizer, self.chat_template, self.max_length, self.max_prompt_length, self.on_bad_row)
        if not pairs:
            raise DataError(f"{part.label}: no usable preference pairs ({why_empty(part.counts, self.max_length, self.max_prompt_length)})")
        part.counts["pairs"] = len(pairs)
        return pairs

    def load(self, source: str, split: str, tokenizer, name: str) -> list[TokenizedPair]:
        """The tokenised pairs of one source's split (counted under ``name``)."""
        part = read_part(source, split, self.format, self.assistant_marker, self.on_bad_row, self.limit)
        pairs = self._tokenize(part, tokenizer)
        self.counts.setdefault(name, Counter()).update(part.counts)
        return pairs

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        tokenizer = self._tokenizer()
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        train_parts = [self._tokenize(p, tokenizer) for p in self.train_parts]
        val = [pair for p in self.val_parts for pair in self._tokenize(p, tokenizer)]
        if self.val_fraction > 0:
            held = [hold_out(pairs, self.val_fraction, self.seed) for pairs in train_parts]
            val = [pair for _, v in held for pair in v]
            train_parts = [t for t, _ in held]
            for part, pairs in zip(self.train_parts, train_parts):
                if not pairs:
                    raise DataError(f"{part.label}: val_fraction {self.val_fraction} holds out all its pairs, leaving none to train on")
        train, self.mix = mix(train_parts, [s.weight for s in self.sources], self.mix_size, self.seed)
        self.counts = {"train": sum_counts(self.train_parts, len(train)), **({"val": sum_counts(self.val_parts, len(val))} if val else {})}
        if self.val_fraction > 0:
            self.counts["train"]["held_out_for_val"] = len(val)
        check_overlap(train, val, self.counts, self.allow_val_in_train, ", ".join(p.label for p in self.val_parts) or "val_fraction")
        for split in (train, val):  # index = position in its split, so per-example caches can key on it
            for i, pair in enumerate(split):
                pair.index = i
        self.train_set, self.val_set = PairDataset(train), PairDataset(val) if val else None
        for part in self.train_parts + self.val_parts:  # tokenised now: the checked texts are not needed again
            part.rows = []
        self.report()

    def report(self) -> None:
        for name, counts in self.counts.items():
            details = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k not in ("rows", "pairs"))
            print(f"[data] {name}: {counts['pairs']} pairs from {counts['rows']} rows" + (f" ({details})" if details else ""))
        if len(self.sources) > 1:
            for source, (taken, available) in zip(self.sources, self.mix):
                print(f"[data] mix: {source.label()} weight {source.weight:g}: {taken} of {available} pairs")

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
