"""Benchmark configurations: one lit-align setting and TRL's closest equivalent, side by side.

A configuration is data (switches), not a mode string: the runners read its fields directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Config:
    """One row of the table."""

    name: str
    """Row label."""
    cached: bool = False
    """lit-align: CachedReference (zero reference forwards); TRL: precompute_ref_log_probs=True."""
    collator: str = "lit_align.data.collate.PairCollator"
    """lit-align collator class (import path): padded pairs, packed pairs, or prompt-shared rows."""
    chunk_size: int | None = 1024
    """lit-align logps_chunk_size (sequence positions per lm_head chunk; None: one unchunked pass)."""
    bf16: bool = False
    """bf16 autocast on both sides (lit-align precision bf16-mixed; TRL bf16=True)."""
    compile: bool = False
    """lit-align PreferenceModule(compile=True): each decoder layer compiled, keys unchanged."""
    checkpointing: bool = False
    """Activation checkpointing of each decoder layer on both sides (lit-align activation_checkpointing=True;
    TRL gradient_checkpointing=True), both non-reentrant."""

    def to_json(self) -> dict:
        return asdict(self)


PACKED = "lit_align.data.packing.PackedPairCollator"
SHARED = "lit_align.data.packing.SharedPromptCollator"

CONFIGS: dict[str, Config] = {c.name: c for c in [
    Config("live"),
    Config("cached", cached=True),
    Config("live+packing", collator=PACKED),
    Config("live+prompt-sharing", collator=SHARED),
    Config("live+chunk64", chunk_size=64),
    Config("live+unchunked-head", chunk_size=None),
    Config("live+bf16", bf16=True),
    Config("live+compile", compile=True),
    Config("cached+packing+prompt-sharing", cached=True, collator=SHARED),
]}
"""Every row the harness knows; ``--configs`` picks some."""

GPU_ROWS = ["live", "cached", "live+prompt-sharing", "cached+packing+prompt-sharing"]
"""The rows of benchmarks/gpu.sh. Padding-free packing alone is left out there: at ``--seq-len`` every
segment is 0.8 to 1.0 of the longest, so no two share a row and it equals the padded layout."""


def run_wide(config: Config, bf16: bool, checkpointing: bool, chunk_size: int | None) -> Config:
    """A row with the invocation's switches applied (``--bf16``, ``--checkpointing``, ``--chunk-size``).

    Switches only turn things on; ``--chunk-size`` replaces the default head chunk (1024), not a
    chunk a row names itself (chunk64, unchunked-head).
    """
    chunk = chunk_size if chunk_size is not None and config.chunk_size == Config.chunk_size else config.chunk_size
    return replace(config, bf16=config.bf16 or bf16, checkpointing=config.checkpointing or checkpointing,
                   chunk_size=chunk)
