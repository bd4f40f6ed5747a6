"""LoRA policies configured in YAML: ``LoraSource`` wraps any ModelSource and returns a PEFT model.

    model:
      class_path: lit_align.peft_config.LoraSource
      init_args:
        base: {class_path: lit_align.models.PretrainedModel, init_args: {path: ...}}
        r: 16
        alpha: 32
        target_modules: all-linear
        use_dora: false          # DoRA: a learned magnitude per output feature (Liu et al. 2024)
        use_rslora: false        # rsLoRA: scale alpha / sqrt(r) instead of alpha / r (Kalajdzievski 2023)
        modules_to_save: null    # e.g. [lm_head]: fully trained copies of these modules, saved with the adapter
        quantization: null       # 4bit: QLoRA, the base in NF4 through bitsandbytes (CUDA only)

The options go to PEFT's ``LoraConfig`` as they are. With ``adapter_path`` the policy continues an
existing adapter (trainable) instead of a fresh one. Pair it with
``lit_align.reference.AdapterDisabledReference``: the reference is then the base model with adapters
switched off (fresh adapter) or the loaded adapter frozen (continued adapter), with no second copy of
the base weights. peft (and bitsandbytes, for QLoRA) is imported lazily.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from lit_align.errors import ConfigError, UserError, check_number
from lit_align.models import ModelSource, PretrainedModel


def qlora_unsupported_reason() -> str | None:
    """Why 4-bit QLoRA cannot run on this machine (None when it can): bitsandbytes' 4-bit kernels need CUDA."""
    if not torch.cuda.is_available():
        return "it needs a CUDA GPU (bitsandbytes' 4-bit kernels) and this machine has none"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "it needs bitsandbytes, which is not installed (pip install bitsandbytes)"
    return None


def unmatched(model: nn.Module, names: list[str], wrapper: type) -> list[str]:
    """The ``names`` (PEFT matches a module's name or its dotted suffix) that no ``wrapper`` module of ``model`` has."""
    wrapped = [n for n, m in model.named_modules() if isinstance(m, wrapper)]
    return [t for t in names if not any(w == t or w.endswith("." + t) for w in wrapped)]


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
        use_dora: bool = False,
        use_rslora: bool = False,
        modules_to_save: list[str] | None = None,
        quantization: Literal["4bit"] | None = None,
    ) -> None:
        """
        Args:
            base: Where the base model comes from (PretrainedModel, TinyModel, ...).
            r: LoRA rank.
            alpha: LoRA scaling numerator (the update is scaled by alpha / r, or alpha / sqrt(r) with use_rslora).
            dropout: Dropout on the LoRA branch's input.
            target_modules: Module names to adapt (e.g. [q_proj, v_proj]) or "all-linear" (every linear layer
                but the output head).
            adapter_path: An existing adapter directory to continue training (its own r / alpha / targets then
                apply).
            seed: Seed of the fresh adapter's initialisation (A random, B zero).
            use_dora: DoRA (weight-decomposed LoRA): each adapted layer also learns a magnitude per output feature.
            use_rslora: rank-stabilised LoRA: scale the update by alpha / sqrt(r) instead of alpha / r.
            modules_to_save: Modules trained in full (a trainable copy each, saved with the adapter), e.g. [lm_head]
                or [embed_tokens] after adding tokens. The adapter-disabled reference uses the originals.
            quantization: "4bit": QLoRA, the base loaded in 4-bit NF4 by bitsandbytes (compute in the source's
                dtype); needs a CUDA GPU, bitsandbytes and a PretrainedModel base, and is refused otherwise.
        """
        from lit_align.models.limits import check_lora_settings

        check_lora_settings(r, alpha, dropout, seed)
        if quantization is not None and not isinstance(base, PretrainedModel):
            raise ConfigError(f"LoraSource quantization {quantization!r}: a 4-bit base is loaded from pretrained weights "
                              f"(lit_align.models.PretrainedModel), not {type(base).__name__}")
        self.base = base
        self.r = r
        self.alpha = alpha
        self.dropout = dropout
        self.target_modules = target_modules
        self.adapter_path = adapter_path
        self.seed = seed
        self.use_dora = use_dora
        self.use_rslora = use_rslora
        self.modules_to_save = list(modules_to_save) if modules_to_save else None
        self.quantization = quantization

    def lora_config(self):
        """The PEFT ``LoraConfig`` of a fresh adapter (every option passed through as it is)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=self.target_modules,
            use_dora=self.use_dora, use_rslora=self.use_rslora, modules_to_save=self.modules_to_save, task_type="CAUSAL_LM",
        )

    def load_base(self, dtype: str | None = None) -> nn.Module:
        """The base model: as its source builds it, or in 4-bit for QLoRA (refused in one line where unsupported)."""
        if self.quantization is None:
            return self.base.load_model(dtype)
        reason = qlora_unsupported_reason()
        if reason is not None:
            raise ConfigError(f"LoraSource quantization {self.quantization!r} (QLoRA) is not available here: {reason}")
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        from lit_align.models import resolve_dtype

        compute = resolve_dtype(dtype or self.base.dtype)
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=compute)
        model = self.base.load_model(dtype, quantization_config=config)
        # casts the remaining float layers (norms) to fp32 and enables input grads; gradient checkpointing
        # stays the module's choice (activation_checkpointing)
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)

    def load_model(self, dtype: str | None = None) -> nn.Module:
        from peft import PeftModel, get_peft_model

        model = self.load_base(dtype)
        if self.adapter_path:
            if not (Path(self.adapter_path) / "adapter_config.json").is_file():
                raise UserError(f"adapter_path {self.adapter_path}: no adapter_config.json there (not a saved PEFT adapter folder)")
            return PeftModel.from_pretrained(model, self.adapter_path, is_trainable=True)
        width = getattr(getattr(model, "config", None), "hidden_size", None)
        if isinstance(width, int) and self.r > width:  # a rank above the layers' width adds parameters, not rank
            raise ConfigError(f"LoraSource: r ({self.r}) exceeds the base model's hidden_size ({width})")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            try:
                model = get_peft_model(model, self.lora_config())
            except ValueError as err:  # PEFT's NoMatchingPeftModuleError: target_modules that name no module
                raise ConfigError(f"LoraSource target_modules {self.target_modules!r}: {str(err).splitlines()[0]}") from None
        from peft.tuners.lora import LoraLayer
        from peft.utils import ModulesToSaveWrapper

        # PEFT refuses targets only when none matches, and skips unmatched modules_to_save: the run would train
        # less than its config says (a list is matched by name; a string is "all-linear" or a regex)
        targets = self.target_modules if isinstance(self.target_modules, (list, tuple)) else []
        for key, names, wrapper in (("target_modules", targets, LoraLayer),
                                    ("modules_to_save", self.modules_to_save or [], ModulesToSaveWrapper)):
            missing = unmatched(model, list(names), wrapper)
            if missing:
                raise ConfigError(f"LoraSource {key} {missing}: no module of the base model has that name")
        return model

    def load_tokenizer(self):
        return self.base.load_tokenizer()

    def export_reference(self) -> dict:
        return self.base.export_reference()

    def identity(self) -> str:
        adapter = None
        if self.adapter_path and Path(self.adapter_path).is_dir():
            files = sorted(p for p in Path(self.adapter_path).iterdir() if p.is_file())
            adapter = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()[:16]
        settings = {"r": self.r, "alpha": self.alpha, "targets": self.target_modules, "seed": self.seed, "adapter": adapter}
        # the options joined later enter only when set, so identities (and reference caches) of earlier runs stay valid
        extra = {"use_dora": self.use_dora, "use_rslora": self.use_rslora, "modules_to_save": self.modules_to_save,
                 "quantization": self.quantization}
        settings.update({k: v for k, v in extra.items() if v})
        return f"lora:{self.base.identity()}:{json.dumps(settings, sort_keys=True)}"
