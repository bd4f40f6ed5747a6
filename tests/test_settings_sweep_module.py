"""Every setting of ``PreferenceModule`` and of every reference strategy changes something a run can
observe, or is listed with the reason it is not probed here.

Settings are read from the signatures (``inspect``): a new setting with neither a probe nor a
reason fails the coverage tests. Observations: the module's loss and metrics on one batch (and the
flags a memory setting sets); a strategy's reference log-probs before and after three optimizer
steps of a moved policy, its metrics and the cache files it wrote.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from lit_align import reference as R
from lit_align.batch import LogpsRequest
from lit_align.data.collate import PairCollator
from lit_align.data.tokenize import TokenizedPair
from lit_align.final_logits import unwrap_causal_lm
from lit_align.losses import IPO
from lit_align.module import PreferenceModule
from lit_align.reference.base import ReferenceContext, ReferenceData
from tests.helpers_reference import tiny_source

PAIRS = [TokenizedPair([5 + i, 6, 7 + i], [8, 9 + i, 10], [11 + i, 12], index=i) for i in range(4)]
COLLATE = PairCollator(257, 1)

# --- PreferenceModule ---------------------------------------------------------------------------------

OPTIMIZER = {"lr", "weight_decay", "betas", "warmup_steps", "schedule", "min_lr_ratio", "optimizer", "scheduler"}
"""Optimizer / scheduler settings: swept by tests/test_optim.py (checked against build_optimizer's signature), not here."""

MODULE_PROBES = {
    "model": lambda: tiny_source(seed=1),
    "loss": lambda: IPO(),
    "reference": lambda: R.FrozenReference(source=tiny_source(seed=1)),
    "activation_checkpointing": lambda: True,
    "logps_chunk_size": lambda: 2,
    "compile": lambda: True,
}


def observe_module(**settings) -> list:
    """Loss and metrics of one batch, plus what the memory / speed settings switch on (those leave
    the numbers equal up to rounding, by design; their switches are what must change)."""
    kwargs = dict(model=tiny_source(), lr=1e-3, warmup_steps=0, schedule="constant") | settings
    m = PreferenceModule(**kwargs)
    m.configure_model()
    core = unwrap_causal_lm(m.policy)
    switches = [getattr(core, "is_gradient_checkpointing", False), m.reference_context().chunk_size,
                any(getattr(layer, "_compiled_call_impl", None) is not None for layer in core.model.layers)]
    if settings.get("compile"):
        return switches  # no compiled forward on the shared 2-core machine: the switch is the observation
    torch.manual_seed(0)
    policy, _, out = m.forward_step(COLLATE(PAIRS))
    logps = [round(float(v), 5) for v in torch.cat([policy.chosen, policy.rejected])]
    return switches + [round(float(out.losses.mean()), 6)] + [(k, round(float(v), 6)) for k, v in sorted(out.metrics.items())] + logps


def test_every_module_setting_is_probed():
    settings = set(inspect.signature(PreferenceModule.__init__).parameters) - {"self"}
    assert settings == set(MODULE_PROBES) | OPTIMIZER


@pytest.mark.parametrize("setting", sorted(MODULE_PROBES))
def test_changing_a_module_setting_changes_the_run(setting):
    assert observe_module() != observe_module(**{setting: MODULE_PROBES[setting]()}), setting


def test_chunk_size_keeps_the_numbers():
    """The one module setting whose numbers must NOT change (beyond rounding): the lm_head chunking."""
    base, chunked = observe_module(), observe_module(logps_chunk_size=2)
    assert base[1] != chunked[1]
    for a, b in zip(base[3:], chunked[3:]):
        a, b = (a[1], b[1]) if isinstance(a, tuple) else (a, b)
        assert math.isclose(a, b, abs_tol=2e-5)


# --- reference strategies -----------------------------------------------------------------------------

ONE = lambda: tiny_source(seed=1)  # noqa: E731 - another model with the policy's tokenizer

REFERENCE_PROBES = {
    # (strategy, setting) -> (other settings the probe needs, the changed value)
    ("FrozenReference", "source"): ({}, ONE), ("FrozenReference", "dtype"): ({}, "bfloat16"),
    ("UnconditionalReference", "source"): ({}, ONE), ("UnconditionalReference", "dtype"): ({}, "bfloat16"),
    ("CachedReference", "source"): ({}, ONE), ("CachedReference", "dtype"): ({}, "bfloat16"),
    ("CachedReference", "cache_dir"): ({}, "elsewhere"), ("CachedReference", "batch_size"): ({}, 3),
    ("CachedReference", "unconditional"): ({}, True),
    ("MovingReference", "alpha"): ({"tau": 1}, 0.3), ("MovingReference", "tau"): ({}, 1),
    ("MovingReference", "source"): ({}, ONE), ("MovingReference", "dtype"): ({}, "bfloat16"),
    ("EMAReference", "alpha"): ({}, 0.5), ("EMAReference", "tau"): ({}, 2),
    ("EMAReference", "source"): ({}, ONE), ("EMAReference", "dtype"): ({}, "bfloat16"),
    ("SyncReference", "tau"): ({}, 1), ("SyncReference", "source"): ({}, ONE), ("SyncReference", "dtype"): ({}, "bfloat16"),
    ("MRPOReference", "source"): ({}, ONE), ("MRPOReference", "eta"): ({"source": ONE}, 0.0),
    ("MRPOReference", "weight"): ({"source": ONE}, 0.3), ("MRPOReference", "dtype"): ({}, "bfloat16"),
    ("MultiReference", "sources"): ({}, lambda: [None, ONE()]),
    ("MultiReference", "weights"): ({"sources": lambda: [None, ONE()]}, [0.2, 0.8]),
    ("MultiReference", "adaptive"): ({"sources": lambda: [None, ONE()]}, True),
    ("MultiReference", "dtype"): ({}, "bfloat16"),
}

NOT_PROBED = {
    ("AdapterDisabledReference", "keep_initial_adapter"):
        "needs a PEFT policy and a saved adapter; tests/test_reference_adapter.py checks both references "
        "(no adapter: the base model bit for bit; a continued adapter: that adapter frozen)",
}


def strategy_settings() -> list[tuple[str, str]]:
    out = []
    for name in R.__all__:
        cls = getattr(R, name)
        if inspect.isclass(cls) and issubclass(cls, R.ReferenceStrategy) and cls is not R.ReferenceStrategy:
            out += [(name, p) for p in inspect.signature(cls.__init__).parameters if p != "self"]
    return out


def test_every_reference_setting_is_probed_or_explained():
    assert set(strategy_settings()) == set(REFERENCE_PROBES) | set(NOT_PROBED)


def value(v):
    return v() if callable(v) and not isinstance(v, type) else v


def observe_reference(strategy: R.ReferenceStrategy, root) -> list:
    """Reference log-probs on one batch, again after 3 optimizer steps of a moved policy; metrics; files."""
    policy = tiny_source().load_model()
    data = ReferenceData(splits={"train": PAIRS, "val": PAIRS}, collate=COLLATE, rank=0, barrier=lambda: None)
    context = ReferenceContext(policy_source=tiny_source(), tokenizer=tiny_source().load_tokenizer(), chunk_size=1024, data=data)
    strategy.configure(policy, context)
    strategy.train(True)
    batch = COLLATE(PAIRS)
    seen = []
    for step in range(4):
        if step:
            with torch.no_grad():
                g = torch.Generator().manual_seed(step)
                for p in policy.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
            strategy.after_optimizer_step(policy, step)
        if step in (0, 3):
            out = strategy.logps(policy, batch, LogpsRequest())
            seen.append(torch.stack([out.chosen, out.rejected]).double())
    seen.append(sorted((k, float(v)) for k, v in strategy.metrics().items()))
    seen.append(sorted(str(p.relative_to(root)).split(".")[-2:][0] + ":" + p.parent.name for p in root.rglob("*.pt")))
    return seen


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(a, b))


CASES = sorted(REFERENCE_PROBES)


@pytest.mark.parametrize("name, setting", CASES, ids=[f"{n}.{s}" for n, s in CASES])
def test_changing_a_reference_setting_changes_its_log_probs(name, setting, tmp_path, monkeypatch):
    extra, changed = REFERENCE_PROBES[(name, setting)]
    cls = getattr(R, name)
    base = {k: value(v) for k, v in extra.items()}
    runs = []
    for i, settings in enumerate((base, base | {setting: value(changed)})):
        root = tmp_path / str(i)
        root.mkdir()
        monkeypatch.chdir(root)  # each run its own cache directory tree
        runs.append(observe_reference(cls(**settings), root))
    assert not same(*runs), f"{name}({setting}={changed!r}) changed nothing"
