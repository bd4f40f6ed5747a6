"""The Trainer's and the checkpoint group's numeric settings, checked before anything runs.

Lightning checks some of its settings (with a ``MisconfigurationException``, which is no
``ValueError`` and so escaped the CLI as a traceback), lets others through to a ``ZeroDivisionError``
(``accumulate_grad_batches 0``) or accepts them silently (``max_steps 0``: an untrained model exported
as the result; ``gradient_clip_val -1``). Every numeric parameter of ``Trainer`` and ``ModelCheckpoint``
has a rule here (``TRAINER_RULES``, ``CHECKPOINT_RULES``; tests/test_settings_sweep.py derives the
parameters from the signatures and fails on one without a rule), and a value a rule accepts that a
user might doubt (0, -1, a huge number) is listed with its meaning in ``ACCEPTED``. What Lightning
still refuses later is translated to a ``ConfigError`` (one line) by ``lightning_refusals``.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Callable, Iterator, Mapping

from lit_align.errors import ConfigError, check_number

Rule = Callable[[str, Any], None]

TRAINS_NOTHING = ("trains nothing: the run would save and export the untrained model as its result; "
                  "to score a model without training use cli.py evaluate")


def integer(low: int, *special: int, why: str = "", switch: bool = False) -> Rule:
    """An integer >= ``low`` (or one of ``special``, e.g. -1 for "no limit"; or True / False where ``switch``)."""

    def rule(key: str, value: Any) -> None:
        if switch and isinstance(value, bool):
            return
        if value in special and not isinstance(value, bool) and isinstance(value, int):
            return
        try:
            check_number(key, value, low, integer=True)
        except ConfigError as err:
            allowed = f" ({', '.join(map(str, special))} allowed)" if special else ""
            raise ConfigError(f"{err}{allowed}{'; ' + why if why else ''}") from None

    return rule


def number(low: float) -> Rule:
    return lambda key, value: check_number(key, value, low)


def batches(positive: bool = False) -> Rule:
    """``limit_*_batches`` / ``overfit_batches``: a whole number of batches, or a fraction in [0, 1] of them."""

    def rule(key: str, value: Any) -> None:
        check_number(key, value, 0)
        if isinstance(value, float) and value > 1 and not value.is_integer():
            raise ConfigError(f"{key} must be a fraction in [0, 1] of the batches or a whole number of batches, got {value!r}")
        if positive and value == 0:
            raise ConfigError(f"{key} 0 {TRAINS_NOTHING}")

    return rule


def interval(key: str, value: Any) -> None:
    """``val_check_interval``: batches (int >= 1), a fraction of an epoch in (0, 1], or a time (a string / mapping)."""
    if isinstance(value, str):
        if not re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", value.strip()):
            raise ConfigError(f"{key} must be a number of batches, a fraction of an epoch or a time 'DD:HH:MM:SS', got {value!r}")
        return
    if isinstance(value, dict) or type(value).__name__ == "timedelta":
        return
    check_number(key, value, 0, low_open=True)
    if isinstance(value, float) and value > 1 and not value.is_integer():
        raise ConfigError(f"{key} must be a fraction in (0, 1] of an epoch or a whole number of batches, got {value!r}")


def devices(key: str, value: Any) -> None:
    """A count (>= 1, or -1 for every GPU), a device list or a string (``auto``, ``0,1``); bounded on CPU."""
    if isinstance(value, str) and value.strip() != "auto" and not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*,?\s*", value):
        raise ConfigError(f"{key} must be a count, -1, 'auto' or GPU indices like '0,1', got {value!r}")
    if isinstance(value, (str, list, tuple)):
        return
    integer(1, -1)(key, value)
    cores = os.cpu_count() or 1
    if value > 8 * cores:
        raise ConfigError(f"{key} {value}: more processes than 8 per CPU core ({cores} cores) would start; "
                          "devices counts processes (CPU) or GPUs")


CLUSTER_VARIABLES = ("WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "LSB_JOBID",
                     "OMPI_COMM_WORLD_SIZE", "GROUP_RANK")
"""Set by a multi-node launch (torchrun, SLURM, LSF, MPI, or Lightning's MASTER_ADDR / NODE_RANK)."""


def nodes(key: str, value: Any) -> None:
    integer(1)(key, value)
    if value > 1 and not any(v in os.environ for v in CLUSTER_VARIABLES):
        raise ConfigError(f"{key} {value}: no multi-node launch found (none of {', '.join(CLUSTER_VARIABLES)} is set), "
                          "so rank 0 would wait for the other nodes forever; see configs/strategy/multinode.yaml")


TRAINER_RULES: dict[str, Rule] = {
    "devices": devices,
    "num_nodes": nodes,
    "fast_dev_run": integer(0, switch=True),
    "max_epochs": integer(1, -1, why=f"0 {TRAINS_NOTHING}"),
    "min_epochs": integer(0),
    "max_steps": integer(1, -1, why=f"0 {TRAINS_NOTHING}"),
    "min_steps": integer(0),
    "limit_train_batches": batches(positive=True),
    "limit_val_batches": batches(),
    "limit_test_batches": batches(),
    "limit_predict_batches": batches(),
    "overfit_batches": batches(),
    "val_check_interval": interval,
    "check_val_every_n_epoch": integer(1),
    "num_sanity_val_steps": integer(-1),
    "log_every_n_steps": integer(1),
    "accumulate_grad_batches": integer(1),
    "gradient_clip_val": number(0),
    "reload_dataloaders_every_n_epochs": integer(0),
}
"""Numeric Trainer parameter -> its check (None is always allowed: Lightning's default then applies)."""

CHECKPOINT_RULES: dict[str, Rule] = {
    "save_top_k": integer(-1),
    "every_n_train_steps": integer(0),
    "every_n_epochs": integer(0),
}

ACCEPTED: dict[tuple[str, str], str] = {
    ("trainer.max_epochs", "-1"): "no epoch limit (max_steps ends the run)",
    ("trainer.max_steps", "-1"): "no step limit (max_epochs ends the run)",
    ("trainer.max_epochs", "huge"): "a budget beyond the data: max_steps ends the run",
    ("trainer.max_steps", "huge"): "a budget beyond the data: max_epochs ends the run",
    ("trainer.min_epochs", "0"): "no minimum", ("trainer.min_epochs", "huge"): "a minimum only overrides early stopping",
    ("trainer.min_steps", "0"): "no minimum", ("trainer.min_steps", "huge"): "a minimum only overrides early stopping",
    ("trainer.fast_dev_run", "0"): "off", ("trainer.fast_dev_run", "huge"): "a debug run of at most that many batches",
    ("trainer.limit_val_batches", "0"): "no validation", ("trainer.limit_test_batches", "0"): "no test batches",
    ("trainer.limit_predict_batches", "0"): "no predict batches", ("trainer.overfit_batches", "0"): "off",
    **{(f"trainer.{k}", "huge"): "more batches than the data has: all of them" for k in (
        "limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches", "overfit_batches")},
    ("trainer.val_check_interval", "huge"): ("validation every that many batches, across epochs with check_val_every_n_epoch: "
                                             "null; otherwise Lightning refuses it at fit start in one line (over the epoch's batches)"),
    ("trainer.check_val_every_n_epoch", "huge"): "validation only every that many epochs",
    ("trainer.num_sanity_val_steps", "0"): "no sanity check", ("trainer.num_sanity_val_steps", "-1"): "every val batch",
    ("trainer.num_sanity_val_steps", "huge"): "every val batch",
    ("trainer.log_every_n_steps", "huge"): "only the epoch-level values are logged",
    ("trainer.accumulate_grad_batches", "huge"): "one optimizer step per epoch, at its end",
    ("trainer.gradient_clip_val", "0"): "no clipping", ("trainer.gradient_clip_val", "huge"): "no clipping in effect",
    ("trainer.reload_dataloaders_every_n_epochs", "0"): "never reload",
    ("trainer.reload_dataloaders_every_n_epochs", "huge"): "never reload within the run",
    ("checkpoint.save_top_k", "0"): "no top-k files (last.ckpt only)", ("checkpoint.save_top_k", "-1"): "keep every file",
    ("checkpoint.every_n_train_steps", "0"): "no step-based saves (at the end only)",
    ("checkpoint.every_n_train_steps", "huge"): "saved at the end only",
    ("checkpoint.every_n_epochs", "0"): "no epoch-based saves", ("checkpoint.every_n_epochs", "huge"): "saved at the end only",
}
"""(group.key, value class) of extreme values the checks accept on a CPU machine, with what they mean.
Value classes: "0", "-1", "nan", "inf", "huge" (10**12 for integers, 1e30 for floats)."""


def check_settings(group: str, rules: Mapping[str, Rule], settings: Mapping[str, Any]) -> None:
    """Apply ``rules`` to ``settings`` (None always passes), naming a refused key as ``group.key``."""
    for key, rule in rules.items():
        value = settings.get(key)
        if value is not None:
            rule(f"{group}.{key}", value)


def check_trainer_settings(settings: Mapping[str, Any]) -> None:
    """Refuse a Trainer setting that cannot work (one ``ConfigError`` naming ``trainer.<key>`` and the value)."""
    devices_ = settings.get("devices")
    if isinstance(devices_, str) and devices_.strip().lstrip("-").isdigit():  # Lightning reads "2" as 2, "-1" as -1
        settings = {**settings, "devices": int(devices_)}
    check_settings("trainer", TRAINER_RULES, settings)
    check_accelerator(settings.get("accelerator"), settings.get("devices"))
    indices = settings.get("devices")
    if (isinstance(indices, (list, tuple)) or (isinstance(indices, str) and "," in indices)) and not has_gpu(settings.get("accelerator")):
        raise ConfigError(f"trainer.devices {indices!r} lists GPU indices, and this run has no GPU "
                          f"(accelerator {settings.get('accelerator') or 'auto'!r}); give a number of processes >= 1")
    if settings.get("devices") == -1 and not has_gpu(settings.get("accelerator")):
        raise ConfigError(f"trainer.devices -1 means every GPU, and this run has none (accelerator "
                          f"{settings.get('accelerator') or 'auto'!r}); give a number of processes >= 1")


def has_gpu(accelerator: Any) -> bool:
    """Whether ``accelerator`` (a name, or auto) runs on GPUs on this machine."""
    import torch

    if isinstance(accelerator, str) and accelerator.lower() == "cpu":
        return False
    return torch.cuda.is_available() or bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def check_checkpoint_settings(settings: Mapping[str, Any]) -> None:
    check_settings("checkpoint", CHECKPOINT_RULES, settings)
    top_k = settings.get("save_top_k")
    if isinstance(top_k, int) and top_k > 1 and settings.get("monitor") is None:
        raise ConfigError(f"checkpoint.save_top_k {top_k} needs checkpoint.monitor (the metric that ranks the files); "
                          "without one use 0 (last.ckpt only) or -1 (keep every file)")
    steps, epochs = settings.get("every_n_train_steps"), settings.get("every_n_epochs")
    if steps and epochs:
        raise ConfigError(f"checkpoint.every_n_train_steps ({steps}) and checkpoint.every_n_epochs ({epochs}): give one "
                          "(set the other to null; every_n_train_steps is 50 by default)")


def check_accelerator(accelerator: Any, count: Any = None) -> None:
    """Refuse an accelerator this machine does not have, in one line (Lightning's is a traceback)."""
    if not isinstance(accelerator, str) or accelerator in ("auto", "cpu"):
        return
    import torch

    name = accelerator.lower()
    cuda, mps = torch.cuda.is_available(), bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name in ("gpu", "cuda") and not cuda and not (name == "gpu" and mps):
        build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise ConfigError(f"trainer.accelerator {accelerator!r}: this machine has no GPU ({build}); use accelerator: cpu (or auto)")
    if name == "mps" and not mps:
        raise ConfigError(f"trainer.accelerator {accelerator!r}: Apple's MPS is not available here; use accelerator: cpu (or auto)")
    if name in ("tpu", "xla"):
        from lightning.fabric.accelerators.xla import _XLA_AVAILABLE

        if not _XLA_AVAILABLE:
            raise ConfigError(f"trainer.accelerator {accelerator!r}: needs torch_xla, which is not installed; use accelerator: cpu (or auto)")
    if name in ("gpu", "cuda") and cuda and isinstance(count, int) and not isinstance(count, bool) and count > torch.cuda.device_count():
        raise ConfigError(f"trainer.devices {count}: this machine has {torch.cuda.device_count()} GPU(s)")


@contextlib.contextmanager
def lightning_refusals(what: str) -> Iterator[None]:
    """Lightning's own refusals (``MisconfigurationException``, a missing optional package) as one ``ConfigError``."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        yield
    except (MisconfigurationException, ModuleNotFoundError) as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise ConfigError(f"{what}: {message}") from err
