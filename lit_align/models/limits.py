"""What a model source's settings must satisfy, checked when the source is built (before any weight is).

transformers builds whatever it is given and fails later: ``hidden_size 0`` is a ZeroDivisionError,
``num_heads`` that does not divide the width a 50-line shape error at the first forward, a model
larger than the machine's memory an allocation failure, and ``max_position_embeddings`` below the
data's ``max_length`` is accepted without a word. Each of these is one ``ConfigError`` here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lit_align.errors import ConfigError, check_number

SEED_RANGE = (0, 2**64 - 1)
"""torch.manual_seed's range."""

ACCEPTED: dict[tuple[str, str], str] = {
    ("TinyModel.seed", "0"): "a seed", ("TinyModel.seed", "huge"): "a seed (any integer below 2**64)",
    ("TinyModel.max_position_embeddings", "huge"): "rotary angles are computed per position, no table is allocated",
    ("TinyModel.rope_theta", "huge"): "a rotary base (large bases, 1e6 and more, are used for long contexts)",
    ("LoraSource.seed", "0"): "a seed", ("LoraSource.seed", "huge"): "a seed (any integer below 2**64)",
    ("LoraSource.dropout", "0"): "no dropout",
    ("LoraSource.alpha", "huge"): "a scale of the adapter's update (a run it makes diverge stops at the non-finite loss check)",
    ("LoraSource.r", "huge"): "refused when the model is built: r above the base model's hidden_size",
}
"""(Class.key, value class) of extreme values a model source accepts, with what they mean (value classes as in
``lit_align.settings.ACCEPTED``)."""


def physical_memory() -> int | None:
    """Bytes of RAM on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_tiny_settings(hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int | None,
                        max_position_embeddings: int, seed: int, num_key_value_heads: int | None, vocab_size: int | None,
                        rope_theta: float, tie_word_embeddings: bool, dtype: str) -> None:
    """Refuse TinyModel settings that cannot build a model, naming the key and the value."""
    from lit_align.models.sources import resolve_dtype
    from lit_align.models.tiny_tokenizer import VOCAB_SIZE

    for key, value in (("hidden_size", hidden_size), ("num_layers", num_layers), ("num_heads", num_heads),
                       ("max_position_embeddings", max_position_embeddings)):
        check_number(key, value, 1, integer=True)
    for key, value in (("intermediate_size", intermediate_size), ("num_key_value_heads", num_key_value_heads),
                       ("vocab_size", vocab_size)):
        if value is not None:
            check_number(key, value, 1, integer=True)
    check_number("seed", seed, *SEED_RANGE, integer=True)
    check_number("rope_theta", rope_theta, 0, low_open=True)
    if hidden_size % num_heads:
        raise ConfigError(f"num_heads ({num_heads}) must divide hidden_size ({hidden_size}): each head gets hidden_size / num_heads dimensions")
    if (hidden_size // num_heads) % 2:
        raise ConfigError(f"hidden_size / num_heads ({hidden_size} / {num_heads} = {hidden_size // num_heads}) must be even: "
                          "rotary embeddings rotate pairs of dimensions")
    if num_key_value_heads is not None and num_heads % num_key_value_heads:
        raise ConfigError(f"num_key_value_heads ({num_key_value_heads}) must divide num_heads ({num_heads})")
    width = intermediate_size or 4 * hidden_size
    kv_width = hidden_size // num_heads * (num_key_value_heads or num_heads)
    vocab = max(vocab_size or 0, VOCAB_SIZE)
    parameters = vocab * hidden_size * (1 if tie_word_embeddings else 2) + num_layers * (
        2 * hidden_size * hidden_size + 2 * hidden_size * kv_width + 3 * hidden_size * width)
    size = parameters * resolve_dtype(dtype).itemsize
    memory = physical_memory()
    if memory is not None and size > memory:
        raise ConfigError(f"TinyModel(hidden_size={hidden_size}, num_layers={num_layers}, intermediate_size={width}, "
                          f"vocab_size={vocab}) would have {parameters:.3g} parameters ({size / 2**30:.3g} GiB in {dtype}), "
                          f"more than this machine's memory ({memory / 2**30:.3g} GiB)")


def check_lora_settings(r: int, alpha: float, dropout: float, seed: int) -> None:
    # PEFT takes any number: alpha 0 trains an adapter that changes nothing, NaN poisons the weights, a
    # dropout outside [0, 1) is silently none (negative) or drops every input (1)
    check_number("LoraSource r", r, 1, integer=True)
    check_number("LoraSource alpha", alpha, 0, low_open=True)
    check_number("LoraSource dropout", dropout, 0, 1, high_open=True)
    check_number("LoraSource seed", seed, *SEED_RANGE, integer=True)


def max_positions(source: Any) -> int | None:
    """The longest sequence a model source is set up for, where it can be known without loading weights."""
    if source is None:
        return None
    if hasattr(source, "base"):  # LoraSource: its base model's
        return max_positions(source.base)
    if isinstance(getattr(source, "max_position_embeddings", None), int):
        return source.max_position_embeddings
    path = getattr(source, "path", None)
    config = Path(str(path)) / "config.json" if path else None
    if config is not None and config.is_file():  # a local Hugging Face folder: its config says
        try:
            settings = json.loads(config.read_text())
        except (OSError, ValueError):
            return None
        value = settings.get("max_position_embeddings", settings.get("n_positions"))
        return value if isinstance(value, int) else None
    return None


def check_model_fits_data(source: Any, datamodule: Any) -> None:
    """Refuse data whose ``max_length`` runs past the positions the model is set up for."""
    positions, length = max_positions(source), getattr(datamodule, "max_length", None)
    if positions is not None and isinstance(length, int) and length > positions:
        raise ConfigError(f"data max_length ({length}) exceeds the model's max_position_embeddings ({positions}): the model "
                          "was not set up for positions that far; lower max_length or raise max_position_embeddings")
