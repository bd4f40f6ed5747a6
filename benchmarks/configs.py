"""Benchmark configurations: one lit-align setting and TRL's closest equivalent, side by side.

A configuration is data (switches), not a mode string: the runners read its fields directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
