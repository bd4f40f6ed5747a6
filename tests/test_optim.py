"""The optimizer and schedule that ``configure_optimizers`` really builds: warmup, parameter groups, every setting.

The module's ``configure_optimizers`` runs on a stand-in trainer that only answers
``estimated_stepping_batches`` (the one thing it reads), so each test looks at the real optimizer and
scheduler objects the fit would use.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import types

import pytest
import torch
from torch import nn

from lit_align.errors import ConfigError


class StandInTrainer:
    def __init__(self, steps: float) -> None:
        self.estimated_stepping_batches = steps


def configured(module, steps: float = 20):
    """configure_optimizers of ``module`` for a fit of ``steps`` optimizer steps: (optimizer, scheduler)."""
    if module.policy is None:
        module.configure_model()
    module._trainer = StandInTrainer(steps)
    config = module.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step"
    return config["optimizer"], config["lr_scheduler"]["scheduler"]


def lr_trajectory(optimizer, scheduler, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: a no-op step, so the scheduler may follow
        scheduler.step()
    return lrs


def make_module(tiny_source, **settings):
    from lit_align.module import PreferenceModule

    return PreferenceModule(model=tiny_source, **{"lr": 1e-3, **settings})


@pytest.mark.parametrize("fraction, steps, expected", [(0.1, 20, 2), (0.1, 40, 4), (0.25, 20, 5), (0.05, 100, 5), (3, 20, 3)])
def test_warmup_builds_that_many_warmup_steps(tiny_source, fraction, steps, expected):
    """A fraction of all steps (the default 0.1) or a count: lr rises linearly for exactly that many steps."""
    optimizer, scheduler = configured(make_module(tiny_source, warmup_steps=fraction, schedule="constant"), steps)
    lrs = lr_trajectory(optimizer, scheduler, steps)
    ramp = [1e-3 * (s + 1) / expected for s in range(expected)]  # (step + 1) / warmup, by hand
    assert lrs[:expected] == pytest.approx(ramp)
    assert lrs[expected:] == pytest.approx([1e-3] * (steps - expected))


def test_default_schedule_is_warmup_then_cosine_to_zero(tiny_source):
    optimizer, scheduler = configured(make_module(tiny_source), 20)  # warmup 0.1 -> 2 steps, cosine over 18
    lrs = lr_trajectory(optimizer, scheduler, 20)
    assert lrs[:2] == pytest.approx([5e-4, 1e-3])
    assert lrs[11] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 9 / 18)))  # halfway: 0.5e-3
    assert lrs[19] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 17 / 18)))


def test_unknown_step_count_with_a_fractional_warmup_is_refused(tiny_source):
    with pytest.raises(ConfigError, match="set trainer.max_steps"):
        configured(make_module(tiny_source), float("inf"))


class WithBiases(nn.Module):
    """Linear layers with biases, a LayerNorm and an embedding: every kind a policy has."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 3)


OPTIMIZERS = [None, torch.optim.AdamW, torch.optim.SGD, torch.optim.Adam, torch.optim.RMSprop, torch.optim.Adagrad,
              functools.partial(torch.optim.SGD, momentum=0.9)]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: getattr(o, "__name__", None) or repr(o)[:40])
def test_weight_decay_never_reaches_biases_and_norms(tiny_source, optimizer):
    """Whatever the optimizer: matrices in a group at model.weight_decay, biases and norm scales at 0."""
    module = make_module(tiny_source, weight_decay=0.1, optimizer=optimizer)
    module.policy = WithBiases()
    built, _ = configured(module)
    names = {id(p): n for n, p in module.policy.named_parameters()}
    decayed = sorted(names[id(p)] for g in built.param_groups if g["weight_decay"] > 0 for p in g["params"])
    plain = sorted(names[id(p)] for g in built.param_groups if g["weight_decay"] == 0 for p in g["params"])
    assert decayed == ["embed.weight", "head.weight", "proj.weight"]
    assert plain == ["head.bias", "norm.bias", "norm.weight", "proj.bias"]
    assert all(g["weight_decay"] == 0.1 for g in built.param_groups if g["weight_decay"] > 0)
    assert all(g["initial_lr"] == 1e-3 for g in built.param_groups)  # model.lr on every group (the peak, before warmup)


def test_weight_decay_shrinks_matrices_only(tiny_source):
    """The outcome, by hand: one AdamW step with zero gradients multiplies decayed weights by 1 - lr x wd, no more."""
    module = make_module(tiny_source, weight_decay=0.5, lr=0.1, warmup_steps=0, schedule="constant")
    module.policy = WithBiases()
    with torch.no_grad():
        for p in module.policy.parameters():
            p.fill_(2.0)
    optimizer, _ = configured(module)
    for p in module.policy.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in module.policy.named_parameters():
        expected = 2.0 * (1 - 0.1 * 0.5) if p.ndim >= 2 else 2.0
        assert torch.allclose(p, torch.full_like(p, expected)), name


# Each optimizer / schedule setting of the module (the parameters of build_optimizer that it passes on),
# a changed value, and the default to compare with.
BASELINE = {"warmup_steps": 0.1, "schedule": "cosine", "min_lr_ratio": 0.0}
CHANGED = {
    "lr": 2e-3,
    "weight_decay": 0.3,
    "betas": (0.5, 0.9),
    "warmup_steps": 0.4,
    "schedule": "linear",
    "min_lr_ratio": 0.5,
    "optimizer": functools.partial(torch.optim.SGD, momentum=0.5),
    "scheduler": functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2, gamma=0.5),
}


def test_the_sweep_covers_every_optimizer_setting():
    from lit_align.optim import build_optimizer

    passed_on = [n for n in inspect.signature(build_optimizer).parameters if n not in ("model", "total_steps")]
    assert sorted(passed_on) == sorted(CHANGED)


def trained(tiny_source, steps: int = 10, **settings) -> tuple[list[float], dict[str, torch.Tensor]]:
    """lr per step and the weights after ``steps`` optimizer steps on fixed gradients (grad = w + 0.1)."""
    torch.manual_seed(0)
    module = make_module(tiny_source, **settings)
    optimizer, scheduler = configured(module, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        for p in module.policy.parameters():
            p.grad = p.detach() + 0.1
        optimizer.step()
        scheduler.step()
    return lrs, {k: v.detach().clone() for k, v in module.policy.state_dict().items()}


@pytest.mark.parametrize("setting", sorted(CHANGED))
def test_changing_each_setting_changes_the_outcome(tiny_source, setting):
    base_lrs, base = trained(tiny_source)
    value = CHANGED[setting]
    lrs, weights = trained(tiny_source, **{setting: value})
    assert any(not torch.equal(base[k], weights[k]) for k in base), f"{setting} changed no weight"
    if setting in ("lr", "warmup_steps", "schedule", "min_lr_ratio", "scheduler"):
        assert lrs != base_lrs, f"{setting} left the learning rate trajectory unchanged"


def test_a_custom_scheduler_is_the_one_stepped(tiny_source):
    optimizer, scheduler = configured(make_module(tiny_source, scheduler=CHANGED["scheduler"]), 10)
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR)
    assert lr_trajectory(optimizer, scheduler, 6) == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])


def torch_optimizers() -> list[type]:
    found = [getattr(torch.optim, n) for n in dir(torch.optim)]
    return [c for c in found if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer]


def takes(cls: type, name: str) -> bool:
    return name in inspect.signature(cls).parameters


@pytest.mark.parametrize("cls", torch_optimizers(), ids=lambda c: c.__name__)
def test_every_torch_optimizer_is_accepted_or_refused_by_name(tiny_source, cls):
    """Per class: init_args lr / weight_decay that the groups would override, betas or decay it lacks: refused."""
    if takes(cls, "lr"):
        with pytest.raises(ConfigError, match="init_args.lr = 0.123 would be ignored"):
            make_module(tiny_source, optimizer=functools.partial(cls, lr=0.123))
    if takes(cls, "weight_decay"):
        with pytest.raises(ConfigError, match="init_args.weight_decay = 0.77 would be ignored"):
            make_module(tiny_source, optimizer=functools.partial(cls, weight_decay=0.77))
    else:
        with pytest.raises(ConfigError, match="has no weight decay"):
            make_module(tiny_source, optimizer=cls, weight_decay=0.1)
    if not takes(cls, "betas"):
        with pytest.raises(ConfigError, match="takes no betas"):
            make_module(tiny_source, optimizer=cls, betas=(0.8, 0.9))
    make_module(tiny_source, optimizer=cls)  # its defaults alone: accepted


STEPPABLE = [c for c in torch_optimizers() if c.__name__ not in ("LBFGS", "SparseAdam", "Muon")]
"""LBFGS needs a closure and one group, SparseAdam sparse gradients, Muon 2-d parameters only."""


@pytest.mark.parametrize("cls", STEPPABLE, ids=lambda c: c.__name__)
def test_every_torch_optimizer_steps_at_model_lr(tiny_source, cls):
    module = make_module(tiny_source, optimizer=cls, warmup_steps=0, schedule="constant")
    optimizer, scheduler = configured(module, 4)
    assert type(optimizer) is cls and all(g["lr"] == 1e-3 for g in optimizer.param_groups)
    before = [p.detach().clone() for p in module.policy.parameters()]
    for p in module.policy.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, module.policy.parameters()))


def test_settings_a_custom_scheduler_would_ignore_are_refused(tiny_source):
    step_lr = CHANGED["scheduler"]
    for setting, value in (("warmup_steps", 0.3), ("schedule", "linear"), ("min_lr_ratio", 0.1)):
        with pytest.raises(ConfigError, match=f"model.{setting} shapes the built-in schedule"):
            make_module(tiny_source, scheduler=step_lr, **{setting: value})
    with pytest.raises(ConfigError, match="ReduceLROnPlateau"):
        make_module(tiny_source, scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau)


def test_betas_given_twice_must_agree(tiny_source):
    with pytest.raises(ConfigError, match="disagree"):
        make_module(tiny_source, betas=(0.8, 0.9), optimizer=functools.partial(torch.optim.AdamW, betas=(0.7, 0.9)))
    optimizer, _ = configured(make_module(tiny_source, betas=(0.8, 0.95)))
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.95)


def test_bitsandbytes_on_cpu_is_refused_in_one_line(tiny_source, monkeypatch):
    """bitsandbytes' 8-bit optimizers need CUDA: on CPU parameters the build stops, naming the class and the device."""
    fake = types.ModuleType("bitsandbytes.optim")

    class AdamW8bit(torch.optim.AdamW):  # the real class's signature is AdamW's plus 8-bit options
        pass

    AdamW8bit.__module__ = "bitsandbytes.optim.adamw"
    fake.AdamW8bit = AdamW8bit
    monkeypatch.setitem(sys.modules, "bitsandbytes.optim", fake)
    module = make_module(tiny_source, optimizer=AdamW8bit)
    with pytest.raises(ConfigError, match=r"AdamW8bit: bitsandbytes' 8-bit optimizers need the parameters on a CUDA device, these are on cpu"):
        configured(module)


def test_lora_keeps_both_groups_so_older_checkpoints_resume(tiny_source):
    """A LoRA policy has no trainable 1-d tensor: the empty no-decay group stays (optimizer states are per group)."""
    from lit_align.peft_config import LoraSource

    module = make_module(LoraSource(tiny_source, r=2), weight_decay=0.1)
    optimizer, _ = configured(module)
    assert [len(g["params"]) > 0 for g in optimizer.param_groups] == [True, False]
    trainable = sum(p.numel() for p in module.policy.parameters() if p.requires_grad)
    assert sum(p.numel() for p in optimizer.param_groups[0]["params"]) == trainable


def test_a_policy_with_nothing_to_train_is_refused(tiny_source):
    module = make_module(tiny_source)
    module.configure_model()
    module.policy.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameter"):
        configured(module)


@pytest.mark.parametrize("warmup, steps", [(5, 4), (21, 20), (100, 20), (2, 1)])
def test_warmup_longer_than_the_run_is_refused(tiny_source, warmup, steps):
    """A run that ends mid-warmup never trains at model.lr: refused, naming the key and the step count."""
    with pytest.raises(ConfigError, match=rf"model.warmup_steps = {warmup} is longer than the run's {steps} optimizer steps"):
        configured(make_module(tiny_source, warmup_steps=warmup), steps)


def test_warmup_as_long_as_the_run_reaches_model_lr_on_its_last_step(tiny_source):
    optimizer, scheduler = configured(make_module(tiny_source, warmup_steps=20, schedule="constant"), 20)
    assert lr_trajectory(optimizer, scheduler, 20)[-1] == pytest.approx(1e-3)
