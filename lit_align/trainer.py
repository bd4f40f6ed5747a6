"""``AlignTrainer`` (Lightning's Trainer with atomic checkpoint files) and loading a checkpoint for evaluation.

Only the Lightning / torch side lives here: the evaluation suite (``evals``) is run by
``callbacks.evaluation``, and ``cli.py`` adds the ``evaluate`` subcommand on top of this trainer.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import lightning as L
import torch

from lit_align.errors import UserError
from lit_align.models import PretrainedModel


def is_adapter_dir(path: str | None) -> bool:
    """A PEFT adapter folder (a LoRA run's ``hf/`` export)."""
    return bool(path) and Path(path).is_dir() and (Path(path) / "adapter_config.json").is_file()


def is_hf_dir(path: str | None) -> bool:
    """An exported Hugging Face folder: a full model (``config.json``) or a LoRA adapter."""
    return bool(path) and Path(path).is_dir() and ((Path(path) / "config.json").is_file() or is_adapter_dir(path))


SPECIAL_CKPT_PATHS = ("last", "best", "hpc")
"""Values of ``ckpt_path`` that Lightning resolves itself (``registry...`` too)."""


def check_ckpt_path(ckpt_path: str | None, allow_hf: bool = True) -> None:
    """Refuse a ``ckpt_path`` that is missing or not a checkpoint, naming it (before anything loads).

    Accepted: a file in ``torch.save``'s format (a zip archive, or a legacy pickle), a folder of a
    sharded checkpoint (DCP ``.metadata``, DeepSpeed ``latest``) and, where ``allow_hf``, an
    exported Hugging Face folder (``config.json``). Anything else would fail deep in ``torch.load``
    ("invalid load key") or be ignored.
    """
    if ckpt_path is None or ckpt_path in SPECIAL_CKPT_PATHS or str(ckpt_path).startswith("registry"):
        return
    path = Path(ckpt_path)
    if not path.exists():
        raise UserError(f"ckpt_path {ckpt_path}: no such file or directory")
    if path.is_dir():
        if is_hf_dir(str(path)):
            if allow_hf:
                return
            start = (f"lit_align.peft_config.LoraSource, adapter_path: {ckpt_path}" if is_adapter_dir(str(path))
                     else f"lit_align.models.PretrainedModel, path: {ckpt_path}")
            raise UserError(f"ckpt_path {ckpt_path} is an exported Hugging Face folder, not a training checkpoint: "
                            f"to start from its weights set the model ({start})")
        if any((path / marker).exists() for marker in (".metadata", "latest")):
            return
        raise UserError(f"ckpt_path {ckpt_path}: a folder that is neither a sharded checkpoint (no .metadata) "
                        "nor an exported Hugging Face model (no config.json)")
    with open(path, "rb") as f:
        head = f.read(2)
    if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):  # torch.save writes a zip; old files a pickle
        raise UserError(f"ckpt_path {ckpt_path}: not a PyTorch checkpoint (expected a .ckpt written by the trainer"
                        + (", or an exported Hugging Face folder)" if allow_hf else ")"))


def load_checkpoint_file(ckpt_path: str, weights_only: bool) -> dict:
    """``torch.load`` of a Lightning checkpoint file, with errors that name the file."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=weights_only)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"ckpt_path {ckpt_path}: cannot be loaded ({type(err).__name__}: {first})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"ckpt_path {ckpt_path}: a torch file but not a Lightning checkpoint (no 'state_dict' entry)")
    return checkpoint


def load_policy_weights(module, hf_dir: str) -> None:
    """Overwrite the policy's weights with those of an exported Hugging Face directory."""
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=next(module.policy.parameters()).dtype)
    module.policy.load_state_dict(exported.state_dict())


def same_base(recorded: str, configured: str) -> bool:
    """Whether an adapter's recorded base names the configured one: the same name, or the same local folder."""
    if recorded == configured:
        return True
    a, b = Path(recorded).expanduser(), Path(configured).expanduser()
    return a.is_dir() and b.is_dir() and a.resolve() == b.resolve()


def check_adapter_base(module, adapter_dir: str) -> None:
    """Refuse an adapter trained on another base than the configured one: same shapes load without an error,
    and the scores would be those of a model nobody trained."""
    import json

    recorded = json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    source = getattr(module, "model_source", None)
    if not recorded or source is None:
        return
    configured = source.export_reference().get("name")
    if configured and not same_base(str(recorded), str(configured)):
        raise UserError(f"ckpt_path {adapter_dir}: the adapter was trained on the base {recorded!r} but the config's base is "
                        f"{configured!r}; configure that base (if it moved, edit adapter_config.json's base_model_name_or_path)")


def load_adapter_weights(module, adapter_dir: str) -> None:
    """Overwrite the LoRA policy's adapter weights (and saved modules) with those of an exported adapter folder."""
    from peft import load_peft_weights, set_peft_model_state_dict

    if not hasattr(module.policy, "peft_config"):
        raise UserError(f"ckpt_path {adapter_dir} is a LoRA adapter, but the configured policy has none "
                        "(give the fit's config: its model is a lit_align.peft_config.LoraSource)")
    check_adapter_base(module, adapter_dir)
    try:
        result = set_peft_model_state_dict(module.policy, load_peft_weights(adapter_dir))
    except RuntimeError as err:  # torch's size mismatch (another r): its first line names the weight
        first = str(err).strip().splitlines()[-1].strip() if str(err).strip() else type(err).__name__
        raise UserError(f"ckpt_path {adapter_dir}: the adapter does not match the configured LoRA policy ({first})") from None
    own = {k for k, _ in module.policy.named_parameters() if "lora_" in k or "modules_to_save" in k}
    missing = sorted(k for k in result.missing_keys if k in own)
    if result.unexpected_keys or missing:
        wrong = (result.unexpected_keys or missing)[0]
        raise UserError(f"ckpt_path {adapter_dir}: the adapter does not match the configured LoRA policy "
                        f"({'unexpected' if result.unexpected_keys else 'missing'} weight {wrong}; same r, targets and options?)")


def load_checkpoint_into(model: L.LightningModule, ckpt_path: str, weights_only: bool | None) -> dict:
    """Build the module's models and load a single-file Lightning checkpoint into them; returns the checkpoint."""
    model.configure_model()
    checkpoint = load_checkpoint_file(ckpt_path, bool(weights_only))
    model.on_load_checkpoint(checkpoint)  # first, as Lightning does: it may upgrade an older layout
    model.load_state_dict(checkpoint["state_dict"])
    return checkpoint


def load_for_evaluation(model: L.LightningModule, ckpt_path: str | None, weights_only: bool | None) -> str | None:
    """Put the weights of ``ckpt_path`` (a Lightning checkpoint or an exported HF directory) into ``model``.

    Returns the checkpoint left for the strategy to load (a sharded checkpoint folder, passed on to
    ``Trainer.validate``), else None. Without ``ckpt_path`` the module keeps its configured weights.
    """
    check_ckpt_path(ckpt_path)
    lightning_ckpt = None if is_hf_dir(ckpt_path) else ckpt_path
    if lightning_ckpt and Path(lightning_ckpt).is_file():
        # A single-file checkpoint is loaded here, into the unsharded module, so any strategy can
        # evaluate it: ModelParallelStrategy would load it itself, strictly and before any hook,
        # demanding the frozen reference's weights that such files leave out. (A sharded DCP
        # checkpoint folder has them and goes through the strategy.)
        load_checkpoint_into(model, lightning_ckpt, weights_only)
        return None
    if is_adapter_dir(ckpt_path):
        if model.model_source is None:
            raise UserError(f"ckpt_path {ckpt_path} is a LoRA adapter: give the fit's config too "
                            "(--config <run>/config.yaml), which names its base model")
        model.configure_model()  # base and a fresh adapter from the config, reference too...
        load_adapter_weights(model, ckpt_path)  # ...then the tuned adapter
    elif is_hf_dir(ckpt_path):
        if model.model_source is None:  # no fit config: the HF directory is the whole model
            model.model_source = PretrainedModel(ckpt_path)
            model.tokenizer = model.model_source.load_tokenizer()
            model.configure_model()
        else:
            model.configure_model()  # policy and reference from the config...
            load_policy_weights(model, ckpt_path)  # ...then the tuned weights
    return lightning_ckpt


def quiet_trainer(**overrides) -> L.Trainer:
    """A one-process CPU Trainer that writes and prints nothing (no logger, checkpoints, bars or summary).

    For scripts, notebooks and tests; ``overrides`` are any Trainer arguments. It keeps the data
    module's own sampler (``use_distributed_sampler=False``), as ``cli.py`` does.
    """
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False,
    )
    return L.Trainer(**{**defaults, **overrides})


class AlignTrainer(L.Trainer):
    """A Lightning Trainer whose checkpoint files are written atomically.

    ``lit_align.checkpoint_io.AtomicCheckpointIO`` replaces the strategy's default ``TorchCheckpointIO``
    (a plugin given explicitly is kept). ``cli.py`` subclasses it with the ``evaluate`` subcommand.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from lightning.pytorch.plugins.io import TorchCheckpointIO

        from lit_align.checkpoint_io import AtomicCheckpointIO

        current = getattr(self.strategy, "_checkpoint_io", None)
        if current is None or type(current) is TorchCheckpointIO:
            self.strategy.checkpoint_io = AtomicCheckpointIO()
