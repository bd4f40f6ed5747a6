"""Export the tuned policy as a Hugging Face directory (weights, tokenizer, model card): at the end of fit
(``HFExport``) and from any checkpoint (``export_checkpoint``, the ``cli.py export`` subcommand).

A LoRA policy is exported as its adapter, whose ``base_model_name_or_path`` is the base source's own
name (``ModelSource.export_reference``: a hub name and revision, a GGUF file's name with its sha256 in
the card), never a cache folder of the training machine; ``merged: true`` adds the full model with the
adapter merged in (``merged/``), loadable by transformers alone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning as L
from torch import nn

from callbacks.model_card import metrics_at, model_card, read_config
from lit_align.checkpoint_io import refuse_non_finite
from lit_align.errors import ConfigError, UserError
from lit_align.redaction import redact, redact_text


def run_dir(trainer: L.Trainer) -> Path:
    return Path(trainer.log_dir or trainer.default_root_dir)


def is_adapter(policy: nn.Module) -> bool:
    return hasattr(policy, "peft_config")


def check_mergeable(source) -> None:
    """Refuse a merged export of a 4-bit (QLoRA) base: merging into NF4 weights would round the update away."""
    if getattr(source, "quantization", None):
        raise ConfigError("HFExport merged: a QLoRA policy (4-bit base) cannot be merged faithfully; export the adapter "
                          "and merge it into the full-precision base (PeftModel.from_pretrained(base, dir).merge_and_unload())")


def merged_model(source, state: dict) -> nn.Module:
    """A fresh copy of the policy (built by its source) with the trained weights, adapters merged into the base."""
    model = source.load_model()
    model.load_state_dict(state, strict=True, assign=True)
    return model.merge_and_unload()


def training_summary(module: L.LightningModule) -> dict[str, str]:
    summary = {"policy": type(module.model_source).__name__}
    for name in ("loss", "reference"):
        part = getattr(module, name, None)
        if part is not None:
            summary[name] = part.describe() if hasattr(part, "describe") else type(part).__name__
    if getattr(module, "lr", None) is not None:
        summary["peak learning rate"] = str(module.lr)
    return summary


def is_export(folder: Path) -> bool:
    """An empty folder or one this module wrote (a model card beside a model or adapter config): safe to replace."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else None
    return names is not None and (not names or ("README.md" in names and bool(names & {"config.json", "adapter_config.json"})))


def write_export(target: Path, module: L.LightningModule, state: dict, merged: bool, steps: int | None,
                 metrics: dict[str, float], config: dict | None, safe_serialization: bool = True) -> Path:
    """Write ``target`` (adapter or full model, tokenizer, README.md; ``merged/`` on request) under a temporary
    name, renamed when complete, so an interrupted export never looks like a finished one."""
    if target.exists() and not is_export(target):  # it is replaced whole: never a run's checkpoints or data
        raise UserError(f"export to {target}: it exists and is not an earlier export (no README.md with a config.json or "
                        "adapter_config.json): choose another hf_export.dirname / output_dir (nothing was written)")
    policy, source = module.policy, module.model_source
    # a diverged policy is no result: refuse it rather than publish NaN weights as the run's model
    refuse_non_finite(state, f"the policy for export to {target}")  # before anything is written
    adapter = is_adapter(policy)
    reference = redact(source.export_reference()) if source is not None else None  # it lands in adapter_config.json
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if adapter:
        peft_config = policy.peft_config[policy.active_adapter]
        kept = peft_config.base_model_name_or_path, peft_config.revision
        if reference is not None:  # the base's own name, not the folder it was loaded from on this machine
            peft_config.base_model_name_or_path, peft_config.revision = reference["name"], reference.get("revision")
        try:
            policy.save_pretrained(tmp, state_dict=state, safe_serialization=safe_serialization)
        finally:
            peft_config.base_model_name_or_path, peft_config.revision = kept
    else:
        policy.save_pretrained(tmp, state_dict=state, safe_serialization=safe_serialization)
    tokenizer = getattr(module, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    merged = merged and adapter  # a full policy is its own merged model
    if merged:
        check_mergeable(source)
        full = merged_model(source, state)
        full.save_pretrained(tmp / "merged", safe_serialization=safe_serialization)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "merged")
        del full
    card = model_card(reference, adapter, merged, steps, metrics, config, training_summary(module))
    (tmp / "README.md").write_text(redact_text(card))  # every line, not only the config: data paths, base name ...  # replaces PEFT's empty template
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


class HFExport(L.Callback):
    """Writes ``<run dir>/<dirname>`` at the end of fit: the model (or LoRA adapter) with ``save_pretrained``,
    its tokenizer and a model card (README.md: base model, training, data, steps, final metrics, config).

    A LoRA adapter names its base portably (see the module docstring); ``merged`` adds ``<dirname>/merged/``.
    Written under a temporary name and renamed when complete, so an interrupted export never looks like a
    finished one. Weights with a NaN / inf are refused (one line), not exported.
    """

    def __init__(self, dirname: str = "hf", safe_serialization: bool = True, merged: bool = False) -> None:
        """
        Args:
            dirname: Folder of the export inside the run directory (``trainer.log_dir``).
            safe_serialization: Write safetensors (True) or PyTorch pickles.
            merged: With a LoRA policy, also write the full model with the adapter merged in (``<dirname>/merged``,
                loadable without PEFT; as large as the base model). Refused for a QLoRA (4-bit) base.
        """
        if not dirname or dirname in (".", "..") or "/" in dirname or "\\" in dirname:
            raise ConfigError(f"hf_export.dirname {dirname!r}: give a folder name inside the run directory (no path "
                              "separators, not '.' or '..')")
        self.dirname = dirname
        self.safe_serialization = safe_serialization
        self.merged = merged
        self.path: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.merged and stage == "fit":
            check_mergeable(getattr(pl_module, "model_source", None))  # before training, not after it

    def export(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path | None:
        from lit_align.sharding import full_state_dict, policy_state

        state = full_state_dict(trainer)  # collective: gathers full weights when sharded (FSDP2, FSDP)
        directory = run_dir(trainer)  # collective too (trainer.log_dir broadcasts): before the rank check
        if not trainer.is_global_zero:
            return None
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        self.path = write_export(directory / self.dirname, pl_module, policy_state(state), self.merged, trainer.global_step,
                                 metrics, read_config(directory / "config.yaml"), self.safe_serialization)
        return self.path

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.export(trainer, pl_module)


def export_checkpoint(module: L.LightningModule, ckpt_path: str, output_dir: str, merged: bool = False,
                      weights_only: bool | None = None) -> Path:
    """The ``export`` subcommand (its arguments are documented on ``cli.EvaluatingTrainer.export``)."""
    from lit_align.sharding import policy_state
    from lit_align.trainer import check_ckpt_path, load_checkpoint_into

    check_ckpt_path(ckpt_path, allow_hf=False)
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserError(f"ckpt_path {ckpt_path}: export reads a single-file checkpoint (.ckpt); a sharded checkpoint "
                        "folder is exported at the end of its fit (hf/), or consolidate it first")
    target = Path(output_dir)
    if target.exists() and not target.is_dir():
        raise UserError(f"output_dir {output_dir} is a file, not a folder: choose a new folder (nothing was written)")
    if target.is_dir() and any(target.iterdir()):
        raise UserError(f"output_dir {output_dir} exists and is not empty: choose a new folder (nothing was written)")
    if merged:
        check_mergeable(module.model_source)
    checkpoint = load_checkpoint_into(module, str(path), weights_only)
    run = path.resolve().parent.parent  # <run>/checkpoints/last.ckpt: the run's config and metrics, when there
    step = checkpoint.get("global_step")
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_export(target, module, policy_state(module.state_dict()), merged, step,
                        metrics_at(run / "metrics.csv", step), read_config(run / "config.yaml"))
