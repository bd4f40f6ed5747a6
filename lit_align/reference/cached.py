"""Reference log-probs computed once and stored, or supplied with the data.

``CachedReference`` runs the reference over the train and validation pairs once (a no-grad pass at
``configure_model``, i.e. before any checkpoint is restored, so "the policy's start" really is the
start) and stores one tensor file per split under ``cache_dir``, named by a sha256 of everything
that changes the numbers: the reference's identity and dtype, the tokenizer (name and vocabulary),
the tokenised pairs of the split (which covers the data files, format, chat template and length
budgets) and the scoring mode. A later run with the same key (a beta sweep, a resume) loads the
file and runs zero reference forwards. Rows are looked up by ``batch.index`` in the split being
run: train while the strategy is in training mode (it follows the LightningModule's), else val.

Ranks: global rank 0 computes and writes (atomically), the others wait at a barrier and load; on a
filesystem not shared between nodes a rank that still finds no file computes it itself.

``DatasetColumnReference`` reads ``ref_chosen_logps`` / ``ref_rejected_logps`` columns from the data
(from any model, even one with another tokenizer, computed elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.logprobs import sequence_logps
from lit_align.models import ModelSource
from lit_align.models.sources import resolve_dtype
from lit_align.reference.base import ReferenceContext, ReferenceData, ReferenceStrategy
from lit_align.reference.frozen import build_reference_model
from lit_align.reference.unconditional import start_token_id, strip_prompts

CACHE_VERSION = 1  # bump when the stored layout or the scoring changes


def _sha(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return _sha([getattr(tokenizer, "name_or_path", ""), vocab, tokenizer.all_special_tokens])


def data_fingerprint(pairs) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.index, p.prompt_ids, p.chosen_ids, p.rejected_ids]).encode())
    return h.hexdigest()


def completion_counts(batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Scored completion tokens (chosen (B,), rejected (B,)), counted as chunked_logps counts them."""
    counts = batch.completion_counts()  # (2B,) per sequence, padded or packed
    b = batch.num_pairs
    return counts[:b], counts[b:]


class CachedReference(ReferenceStrategy):
    """Reference log-probs computed once over train and val data, stored on disk and reused.

    Provides sequence log-probs only (no logits): losses that mix reference logits every step
    (epsilon-DPO) are refused at startup.
    """

    provides_logits = False
    provides_token_logps = False

    @property
    def scores_unconditionally(self) -> bool:  # type: ignore[override]
        return self.unconditional

    def __init__(
        self,
        source: ModelSource | None = None,
        dtype: str | None = None,
        cache_dir: str = "reference_cache",
        batch_size: int = 16,
        unconditional: bool = False,
    ) -> None:
        """
        Args:
            source: A ModelSource for the reference; None uses the policy's starting weights.
            dtype: Dtype the reference runs in while filling the cache (default: the policy's).
            cache_dir: Directory of the cache files (shared by runs that should reuse them).
            batch_size: Pairs per reference forward while filling the cache.
            unconditional: Score each response without its prompt (log p(y), the study's likelihood reward).
        """
        super().__init__()
        self.source = source
        self.dtype = dtype
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.unconditional = unconditional
        self.tables: dict[str, torch.Tensor] = {}
        """Per split: (N, 2) float32 log-probs (chosen, rejected), indexed by pair index."""
        self.status: dict[str, str] = {}
        """Per split: 'computed' or 'loaded' (in this process)."""
        self.forwards = 0
        """Reference forward passes run by this process (0 on a cache hit)."""
        self.hits = 0
        """Batches served from the cache."""

    # --- building ---------------------------------------------------------------------------------
    def starting_point(self, context: ReferenceContext) -> ModelSource:
        """The reference's source: ``source``, else the policy's own, loaded afresh.

        Not a copy of the policy as it is now: when ``cli.py evaluate`` fills a cache the policy
        already holds tuned weights, and a copy of them would be cached as the reference.
        """
        return self.source if self.source is not None else context.policy_source

    def key_inputs(self, context: ReferenceContext, pairs, policy_dtype: torch.dtype) -> dict[str, object]:
        """Everything that changes the cached numbers (tests/test_reference_cache_key.py varies each one).

        The dtype is the one the reference really runs in: ``dtype`` None follows the policy's, so a
        cache filled by a bf16 run must not serve an fp32 one.
        """
        dtype = resolve_dtype(self.dtype) if self.dtype else policy_dtype
        return {
            "version": CACHE_VERSION, "reference": self.starting_point(context).identity(), "dtype": str(dtype),
            "tokenizer": tokenizer_fingerprint(context.tokenizer), "data": data_fingerprint(pairs),
            "unconditional": self.unconditional,
        }

    def key(self, context: ReferenceContext, pairs, policy_dtype: torch.dtype) -> str:
        """The cache file's name: a sha256 of ``key_inputs``."""
        return _sha(self.key_inputs(context, pairs, policy_dtype))

    def configure(self, policy: nn.Module, context: ReferenceContext) -> None:
        super().configure(policy, context)
        data = context.data
        if self.tables or data is None:
            return  # not attached yet (or already prepared); logps explains what is missing
        model = None
        for split, pairs in data.splits.items():
            path = Path(self.cache_dir) / f"{self.key(context, pairs, next(policy.parameters()).dtype)}.{split}.pt"
            if not path.exists() and data.rank == 0:
                model = model if model is not None else build_reference_model(policy, self.starting_point(context), self.dtype)
                self._write(path, self._compute(model, pairs, data, context))
                self.status[split] = "computed"
            data.barrier()
            if path.exists():
                self.tables[split] = torch.load(path, weights_only=True)["logps"]
                self.status.setdefault(split, "loaded")
            else:  # rank > 0 on a filesystem not shared with rank 0
                model = model if model is not None else build_reference_model(policy, self.starting_point(context), self.dtype)
                self.tables[split] = self._compute(model, pairs, data, context)
                self.status[split] = "computed"
            print(f"[reference] {split}: {len(pairs)} pairs {self.status[split]} ({path})")
        del model  # the reference model is not needed again

    @torch.no_grad()
    def _compute(self, model: nn.Module, pairs, data: ReferenceData, context: ReferenceContext) -> torch.Tensor:
        device = next(model.parameters()).device
        start = start_token_id(context.tokenizer) if self.unconditional else None
        table = torch.full((max(p.index for p in pairs) + 1, 2), float("nan"), dtype=torch.float32)
        for i in range(0, len(pairs), self.batch_size):
            batch = data.collate(pairs[i : i + self.batch_size]).to(device)
            if start is not None:
                batch = strip_prompts(batch, start)
            out = sequence_logps(model, batch, LogpsRequest(), self.chunk_size)
            self.forwards += 1
            table[batch.index.cpu()] = torch.stack([out.chosen, out.rejected], -1).float().cpu()
        return table

    def _write(self, path: Path, table: torch.Tensor) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"logps": table}, tmp)
        os.replace(tmp, path)  # atomic: a reader never sees half a file

    # --- one step ---------------------------------------------------------------------------------
    @torch.no_grad()
    def logps(self, policy: nn.Module, batch: PreferenceBatch, request: LogpsRequest) -> SequenceLogps:
        split = "train" if self.training else "val"  # validation, sanity check, test and evaluate: val
        if split not in self.tables:
            raise ConfigError(
                f"CachedReference has no {split} cache: fit with a PreferenceDataModule (train_set / val_set) so the "
                "cache can be filled at configure_model"
            )
        values = self.tables[split][batch.index.cpu()].to(batch.input_ids.device)  # (B, 2)
        self.hits += 1
        chosen_tokens, rejected_tokens = completion_counts(batch)
        return SequenceLogps(values[:, 0], values[:, 1], chosen_tokens, rejected_tokens)

    def metrics(self) -> dict[str, float]:
        loaded = bool(self.status) and all(v == "loaded" for v in self.status.values())
        return {"ref/forwards": float(self.forwards), "ref/cache_hits": float(self.hits), "ref/cache_loaded": float(loaded)}

    def describe(self) -> str:
        mode = ", unconditional" if self.unconditional else ""
        return f"CachedReference({self.cache_dir}{mode})"


class DatasetColumnReference(ReferenceStrategy):
    """Reference log-probs supplied as dataset columns ``ref_chosen_logps`` / ``ref_rejected_logps``.

    They may come from any model, even one with another tokenizer (sequence-level sums over its own
    tokenisation), computed elsewhere. No reference model is built or run.
    """

    provides_logits = False
    provides_token_logps = False

    def logps(self, policy: nn.Module, batch: PreferenceBatch, request: LogpsRequest) -> SequenceLogps:
        if batch.ref_logps is None:
            raise ConfigError(
                "DatasetColumnReference needs ref_chosen_logps / ref_rejected_logps columns in the data: add them, "
                "or use CachedReference / FrozenReference"
            )
        chosen_tokens, rejected_tokens = completion_counts(batch)
        values = batch.ref_logps.float()
        return SequenceLogps(values[:, 0], values[:, 1], chosen_tokens, rejected_tokens)
