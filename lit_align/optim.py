"""The optimizer (any torch optimizer, AdamW by default) and its learning-rate schedule.

Both are injected into ``PreferenceModule`` as factories, the LightningCLI idiom::

    model:
      optimizer:
        class_path: torch.optim.SGD          # or bitsandbytes.optim.AdamW8bit (CUDA), ...
        init_args: {momentum: 0.9}
      scheduler:                             # optional; default: warmup + cosine / linear / constant
        class_path: torch.optim.lr_scheduler.StepLR
        init_args: {step_size: 100}

Whatever the optimizer, the peak learning rate is ``model.lr`` and the weight decay ``model.weight_decay``:
they are set per parameter group (so that biases and norm scales never decay), and torch's param-group
values win over the optimizer's own ``lr`` / ``weight_decay`` arguments. Setting those arguments as
well would be ignored, so a value that differs from the class's default there is refused instead.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from lit_align.errors import ConfigError

OptimizerFactory = Callable[[Iterable], Optimizer]
"""Builds the optimizer from parameter groups (Lightning's ``OptimizerCallable``)."""

SchedulerFactory = Callable[[Optimizer], torch.optim.lr_scheduler.LRScheduler]
"""Builds a learning-rate scheduler, stepped once per optimizer step (Lightning's ``LRSchedulerCallable``)."""

SET_PER_GROUP = ("lr", "weight_decay")
"""Optimizer arguments that the module's own settings provide, through the parameter groups."""


def factory_target(factory: Callable | None) -> tuple[type | None, dict[str, Any]]:
    """The class a factory builds and the keyword arguments it carries (None, {} when unknown).

    Recognises a class, ``functools.partial(cls, ...)`` and jsonargparse's partials (the class is one
    of the partial's positional arguments), which is what a ``class_path`` in YAML becomes.
    """
    if factory is None:
        return None, {}
    if isinstance(factory, type):
        return factory, {}
    if isinstance(factory, functools.partial):
        for candidate in (factory.func, *factory.args):
            if isinstance(candidate, type):
                return candidate, dict(factory.keywords)
    return None, {}


def _defaults(cls: type) -> dict[str, Any]:
    return {n: p.default for n, p in inspect.signature(cls).parameters.items() if p.default is not inspect.Parameter.empty}


def check_optimizer(factory: OptimizerFactory | None, lr: float, weight_decay: float, betas) -> None:
    """Refuse, naming the key, an optimizer setting that would be accepted and then not take effect."""
    cls, kwargs = factory_target(factory)
    if cls is None:
        return  # an opaque callable: nothing to inspect before it runs
    name = f"{cls.__module__}.{cls.__qualname__}"
    if not (issubclass(cls, Optimizer) or cls.__module__.startswith("bitsandbytes")):
        raise ConfigError(f"model.optimizer: {name} is not a torch.optim.Optimizer")
    defaults, params = _defaults(cls), inspect.signature(cls).parameters
    ours = {"lr": lr, "weight_decay": weight_decay}
    for key in SET_PER_GROUP:
        if key in kwargs and kwargs[key] != defaults.get(key) and kwargs[key] != ours[key]:
            raise ConfigError(f"model.optimizer.init_args.{key} = {kwargs[key]!r} would be ignored: the {key} of every "
                              f"parameter group is model.{key} ({ours[key]!r}); set model.{key} instead")
    if weight_decay and "weight_decay" not in params:
        raise ConfigError(f"model.weight_decay = {weight_decay!r}: {name} has no weight decay (set it to 0 or use another optimizer)")
    if betas is not None:
        if "betas" not in params:
            raise ConfigError(f"model.betas = {list(betas)!r}: {name} takes no betas (leave model.betas null)")
        given = kwargs.get("betas")
        if given is not None and tuple(given) != tuple(defaults.get("betas", ())) and tuple(given) != tuple(betas):
            raise ConfigError(f"model.betas {list(betas)!r} and model.optimizer.init_args.betas {list(given)!r} disagree: set one")


def check_scheduler(factory: SchedulerFactory | None, builtin_changed: list[str]) -> None:
    """Refuse a scheduler that cannot be stepped per optimizer step, or built-in schedule settings it would ignore."""
    if factory is None:
        return
    cls, _ = factory_target(factory)
    if cls is not None and issubclass(cls, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ConfigError("model.scheduler: ReduceLROnPlateau needs a monitored metric per epoch and is not supported; "
                          "use a step-based scheduler")
    if builtin_changed:
        raise ConfigError(f"model.{builtin_changed[0]} shapes the built-in schedule, which model.scheduler replaces: "
                          f"leave {', '.join('model.' + k for k in builtin_changed)} at the default, or model.scheduler null")


def is_decayed(name: str, param: nn.Parameter) -> bool:
    """Matrices decay; biases and norm scales (1-d tensors) do not, as is standard (e.g. HF Trainer, nanoGPT)."""
    return param.ndim >= 2


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """Trainable parameters in two groups: decayed matrices, and biases / norm scales at weight decay 0.

    Both groups are kept even when one is empty (a LoRA policy has no trainable 1-d tensor): checkpoints
    hold the optimizer state per group, and a run must resume from those written before. With ``lr``
    each group carries it, which every torch optimizer reads before its own default.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if is_decayed(name, param) else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lr is not None:
        for group in groups:
            group["lr"] = lr
    return groups


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * shape


def warmup_count(warmup_steps: int | float, total: int) -> int:
    """Warmup in optimizer steps: ``warmup_steps`` itself if >= 1, else that fraction of ``total`` (rounded)."""
    return int(warmup_steps) if warmup_steps >= 1 else int(round(warmup_steps * total))


def _check_device(optimizer_cls: type | None, model: nn.Module) -> None:
    if optimizer_cls is None or not optimizer_cls.__module__.startswith("bitsandbytes"):
        return
    devices = {p.device.type for p in model.parameters() if p.requires_grad}
    if devices != {"cuda"}:
        raise ConfigError(f"model.optimizer {optimizer_cls.__module__}.{optimizer_cls.__qualname__}: bitsandbytes' 8-bit "
                          f"optimizers need the parameters on a CUDA device, these are on {', '.join(sorted(devices))}; "
                          "use torch.optim.AdamW")


def build_optimizer(model: nn.Module, total_steps: float, lr: float, weight_decay: float, betas, warmup_steps: int | float,
                    schedule: str, min_lr_ratio: float, optimizer: OptimizerFactory | None = None,
                    scheduler: SchedulerFactory | None = None) -> dict:
    """Lightning's ``configure_optimizers`` result: the optimizer over ``param_groups`` and a per-step scheduler.

    Args:
        model: the policy (its trainable parameters are optimised).
        total_steps: optimizer steps of the whole fit (``trainer.estimated_stepping_batches``; inf if unknown).
        lr: peak learning rate, set on every parameter group.
        weight_decay: weight decay of the matrices (biases and norm scales get 0).
        betas: passed to the optimizer when not None.
        warmup_steps: linear warmup, optimizer steps if >= 1, else a fraction of ``total_steps``.
        schedule: decay after warmup (cosine, linear, constant) of the built-in schedule.
        min_lr_ratio: final learning rate of the built-in schedule, as a fraction of ``lr``.
        optimizer: the optimizer factory (None: ``torch.optim.AdamW``).
        scheduler: a scheduler factory replacing the built-in schedule (None: the built-in one).
    """
    factory = optimizer if optimizer is not None else torch.optim.AdamW
    cls, _ = factory_target(factory)
    _check_device(cls, model)
    groups = param_groups(model, weight_decay, lr)
    if not any(g["params"] for g in groups):
        raise ConfigError("the policy has no trainable parameter (all requires_grad=False): nothing to optimise")
    built = factory(groups, **({"betas": tuple(betas)} if betas is not None else {}))
    if scheduler is not None:
        lr_scheduler = scheduler(built)
    else:
        known = math.isfinite(total_steps) and total_steps > 0
        if not known and ((0 < warmup_steps < 1) or schedule != "constant"):
            raise ConfigError(f"the number of optimizer steps is unknown (trainer.estimated_stepping_batches = {total_steps}), "
                              f"so warmup_steps {warmup_steps} / schedule {schedule!r} cannot be laid out: set trainer.max_steps")
        total = int(total_steps) if known else 0
        warmup = warmup_count(warmup_steps, total)
        if known and warmup > total:  # the run would end mid-ramp: model.lr accepted, never used
            raise ConfigError(f"model.warmup_steps = {warmup_steps!r} is longer than the run's {total} optimizer steps: the "
                              f"learning rate would never reach model.lr ({lr!r}); use at most {total} steps or a fraction below 1")
        lr_scheduler = torch.optim.lr_scheduler.LambdaLR(built, functools.partial(lr_factor, total=total, warmup=warmup,
                                                                                  schedule=schedule, min_ratio=min_lr_ratio))
    return {"optimizer": built, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step"}}
