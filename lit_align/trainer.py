"""``AlignTrainer`` (Lightning's Trainer with atomic checkpoint files) and loading a checkpoint for evaluation.

Only the Lightning / torch side lives here: the evaluation suite (``evals``) is run by
``callbacks.evaluation``, and ``cli.py`` adds the ``evaluate`` subcommand on top of this trainer.
"""

from __future__ import annotations

import inspect
import zipfile
from pathlib import Path

import lightning as L
import torch

from lit_align.checkpoint_io import refuse_non_finite
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
    from lit_align.checkpoint_files import checksum_path, verify_checksum

    if checksum_path(path).is_file():  # a damaged file is reported as damaged, not as "not a checkpoint"
        verify_checksum(path)
    with open(path, "rb") as f:
        head = f.read(2)
    if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):  # torch.save writes a zip; old files a pickle
        raise UserError(f"ckpt_path {ckpt_path}: not a PyTorch checkpoint (expected a .ckpt written by the trainer"
                        + (", or an exported Hugging Face folder)" if allow_hf else ")"))


def load_checkpoint_file(ckpt_path: str, weights_only: bool | None = True) -> dict:
    """A Lightning checkpoint file, verified against its checksum and loaded weights-only
    (``lit_align.checkpoint_files.load_checkpoint``), with errors that name the file."""
    from lit_align.checkpoint_files import load_checkpoint

    return load_checkpoint(ckpt_path, "cpu", weights_only)


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
    checkpoint = load_checkpoint_file(ckpt_path, weights_only)
    refuse_non_finite(checkpoint["state_dict"], f"checkpoint {ckpt_path}")  # a diverged run is no result
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
    if is_hf_dir(ckpt_path):  # a full model or an adapter
        refuse_non_finite(model.policy.state_dict(), f"exported model {ckpt_path}")
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


def val_check_settings(val_every_n_steps: int, trainer_kwargs: dict) -> dict:
    """The Trainer arguments that validate every ``val_every_n_steps`` optimizer steps (see AlignTrainer)."""
    from lit_align.errors import ConfigError, check_number

    check_number("trainer.val_every_n_steps", val_every_n_steps, 1, integer=True)
    if trainer_kwargs.get("val_check_interval") is not None:
        raise ConfigError(f"trainer.val_every_n_steps ({val_every_n_steps}) and trainer.val_check_interval "
                          f"({trainer_kwargs['val_check_interval']}) both set when to validate: give one")
    max_steps = trainer_kwargs.get("max_steps")
    if isinstance(max_steps, int) and 0 <= max_steps < val_every_n_steps:  # would never validate, silently
        raise ConfigError(f"trainer.val_every_n_steps ({val_every_n_steps}) is more than trainer.max_steps ({max_steps}): "
                          f"the run would never validate; use at most {max_steps}")
    accumulate = trainer_kwargs.get("accumulate_grad_batches") or 1
    return {"val_check_interval": int(val_every_n_steps) * int(accumulate), "check_val_every_n_epoch": None}


class AlignTrainer(L.Trainer):
    """A Lightning Trainer whose settings are checked up front (``lit_align.settings``), whose checkpoint files
    are written atomically and verified, and whose resumed fits keep the metrics logged before the checkpoint.

    ``lit_align.checkpoint_io.AtomicCheckpointIO`` replaces the strategy's default ``TorchCheckpointIO``
    (a plugin given explicitly is kept); ``lit_align.run_history.KeepLoggedHistory`` restores
    metrics.csv's earlier rows on resume. ``cli.py`` subclasses it with the ``evaluate`` subcommand.
    """

    def __init__(self, *args, val_every_n_steps: int | None = None, **kwargs) -> None:
        """
        Args:
            val_every_n_steps: Validate every N optimizer steps, counted over the whole fit (TRL's eval_steps).
                Lightning's val_check_interval counts batches, which under accumulate_grad_batches k is k times
                fewer optimizer steps; this sets val_check_interval = N x k and check_val_every_n_epoch = None.
                Give one of the two.
        """
        from lit_align.settings import check_trainer_settings, lightning_refusals

        if val_every_n_steps is not None:
            kwargs.update(val_check_settings(val_every_n_steps, kwargs))
        # every numeric setting checked first (one line naming it), and Lightning's own refusals translated
        check_trainer_settings(inspect.signature(L.Trainer.__init__).bind(self, *args, **kwargs).arguments)
        with lightning_refusals("trainer"):
            super().__init__(*args, **kwargs)
        from lightning.pytorch.plugins.io import TorchCheckpointIO

        from lit_align.checkpoint_io import AtomicCheckpointIO
        from lit_align.run_history import KeepLoggedHistory

        current = getattr(self.strategy, "_checkpoint_io", None)
        if current is None or type(current) is TorchCheckpointIO:
            self.strategy.checkpoint_io = AtomicCheckpointIO()
        self._history = KeepLoggedHistory()
        self.callbacks.append(self._history)

    def fit(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path=None,
            weights_only=None) -> None:
        from lit_align.run_history import read_history

        # read before the loggers start: CSVLogger deletes an existing metrics.csv when it does
        resuming = ckpt_path is not None and Path(str(ckpt_path)).is_file()
        self._history.history = read_history(self) if resuming else {}
        return super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, weights_only)
