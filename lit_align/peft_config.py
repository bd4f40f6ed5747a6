"""LoRA policies configured in YAML: ``LoraSource`` wraps any ModelSource and returns a PEFT model.

    model:
      class_path: lit_align.peft_config.LoraSource
      init_args:
        base: {class_path: lit_align.models.PretrainedModel, init_args: {path: ...}}
        r: 16
        alpha: 32
        target_modules: all-linear

With ``adapter_path`` the policy continues an existing adapter (trainable) instead of a fresh one.
Pair it with ``lit_align.reference.AdapterDisabledReference``: the reference is then the base model
with adapters switched off (fresh adapter) or the loaded adapter frozen (continued adapter),
with no second copy of the base weights. peft is imported lazily.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from lit_align.models import ModelSource


class LoraSource(ModelSource):
    """A base ModelSource plus a LoRA adapter (new, or loaded from ``adapter_path``)."""

    def __init__(
        self,
        base: ModelSource,
        r: int = 8,
        alpha: int = 16,
        dropout: float = 0.0,
        target_modules: list[str] | str = "all-linear",
        adapter_path: str | None = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            base: Where the base model comes from (PretrainedModel, TinyModel, ...).
            r: LoRA rank.
            alpha: LoRA scaling numerator (the update is scaled by alpha / r).
            dropout: Dropout on the LoRA branch's input.
            target_modules: Module names to adapt (e.g. [q_proj, v_proj]) or "all-linear" (every linear layer
                but the output head).
            adapter_path: An existing adapter directory to continue training (its own r / alpha / targets then
                apply).
            seed: Seed of the fresh adapter's initialisation (A random, B zero).
        """
        from lit_align.models.limits import check_lora_settings

        check_lora_settings(r, alpha, dropout, seed)
        self.base = base
        self.r = r
        self.alpha = alpha
        self.dropout = dropout
        self.target_modules = target_modules
        self.adapter_path = adapter_path
        self.seed = seed

    def load_model(self, dtype: str | None = None) -> nn.Module:
        from peft import LoraConfig, PeftModel, get_peft_model

        model = self.base.load_model(dtype)
        if self.adapter_path:
            if not (Path(self.adapter_path) / "adapter_config.json").is_file():
                from lit_align.errors import UserError

                raise UserError(f"adapter_path {self.adapter_path}: no adapter_config.json there (not a saved PEFT adapter folder)")
            return PeftModel.from_pretrained(model, self.adapter_path, is_trainable=True)
        width = getattr(getattr(model, "config", None), "hidden_size", None)
        if isinstance(width, int) and self.r > width:  # a rank above the layers' width adds parameters, not rank
            from lit_align.errors import ConfigError

            raise ConfigError(f"LoraSource: r ({self.r}) exceeds the base model's hidden_size ({width})")
        config = LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=self.target_modules, task_type="CAUSAL_LM"
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return get_peft_model(model, config)

    def load_tokenizer(self):
        return self.base.load_tokenizer()

    def identity(self) -> str:
        adapter = None
        if self.adapter_path and Path(self.adapter_path).is_dir():
            files = sorted(p for p in Path(self.adapter_path).iterdir() if p.is_file())
            adapter = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()[:16]
        settings = {"r": self.r, "alpha": self.alpha, "targets": self.target_modules, "seed": self.seed, "adapter": adapter}
        return f"lora:{self.base.identity()}:{json.dumps(settings, sort_keys=True)}"
