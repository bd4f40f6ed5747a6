"""Model sources (``class_path: lit_align.models.TinyModel`` ...) and what they build on.

``sources`` defines them, ``tiny_tokenizer`` is the built-in model's tokenizer and ``gguf`` reads GGUF
files. The public names are re-exported here so that configs and saved ``config.yaml`` files keep the
short class_path: jsonargparse writes the shortest module path that exports a class.
"""

from lit_align.models.sources import (
    DTYPES, HUB_NAME, ModelSource, PretrainedModel, SmolLM2, TinyModel, from_pretrained, resolve_dtype, save_tiny,
)

__all__ = [
    "DTYPES", "HUB_NAME", "ModelSource", "PretrainedModel", "SmolLM2", "TinyModel", "from_pretrained", "resolve_dtype",
    "save_tiny",
]
