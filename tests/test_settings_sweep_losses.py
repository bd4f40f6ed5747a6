"""Every constructor setting of every loss changes what the loss computes (no setting is ignored).

The settings are read from the signatures (``inspect``), so a new setting without an alternative
value here fails ``test_every_loss_setting_has_a_probe``. The observation is everything a loss can
change: the per-pair losses and metrics of a forward over a batch that carries every optional
input (per-token log-probs, WPO's statistic, epsilon-DPO's mixes, ODPO's scores), its log-prob
requests, and the same after one ``after_optimizer_step`` (stateful losses: epsilon-DPO's beta,
BCO's running shift).
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch

from lit_align import losses as L
from lit_align.batch import PreferenceBatch, SequenceLogps

B, T = 3, 5

ABSTRACT = {"PreferenceLoss", "PairwiseLoss", "Divergence"}
DIVERGENCES = {"ReverseKL", "ForwardKL", "JensenShannon", "AlphaDivergence"}  # probed inside DPO(divergence=...)
REQUIRED = {"loss": lambda: L.DPO(), "losses": lambda: [L.DPO(), L.EpsilonDPO()]}
"""Values of settings without a default (wrappers and composites need something to wrap)."""

ALTERNATIVE = {
    "divergence": lambda: L.ForwardKL(),
    "loss": lambda: L.IPO(),
    "losses": lambda: [L.IPO(), L.EpsilonDPO()],
    "weights": lambda: [0.5, 2.0],
}
"""Other values of settings that are not plain numbers or flags."""


def alternative(name: str, default):
    """Another valid value of a setting: a flag flipped, a number moved within every loss's valid range."""
    if name in ALTERNATIVE:
        return ALTERNATIVE[name]()
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        return default * 0.5 + 0.3 if default < 1 else default * 0.5  # 0 -> 0.3, 0.1 -> 0.35, 50 -> 25
    raise AssertionError(f"no alternative value for {name}={default!r}: add one to ALTERNATIVE")


def loss_classes() -> list[str]:
    return [n for n in L.__all__ if n not in ABSTRACT]


def settings(name: str) -> list[tuple[str, object]]:
    params = list(inspect.signature(getattr(L, name).__init__).parameters.values())[1:]
    return [(p.name, p.default) for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def build(name: str, **overrides):
    """The loss with its defaults (and ``overrides``); a divergence is built inside DPO."""
    kwargs = {p: REQUIRED[p]() for p, d in settings(name) if d is inspect.Parameter.empty}
    kwargs.update(overrides)
    if name in DIVERGENCES:
        return L.DPO(divergence=getattr(L, name)(**kwargs))
    return getattr(L, name)(**kwargs)


def sequences(seed: int, tokens: bool) -> SequenceLogps:
    """B pairs of distinct log-probs with every optional field a loss may read (float64)."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([5, 3, 4, 2, 5, 4])  # (2B,) completion lengths, chosen then rejected
    mask = torch.arange(T)[None, :] < counts[:, None]  # (2B, T) left-aligned targets
    token_logps = -torch.rand(2 * B, T, generator=g, dtype=torch.float64) * 3 * mask
    sums = token_logps.sum(-1)
    extras = {}
    if tokens:
        steps = torch.tensor([1.0, -1.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # epsilon-DPO: s = +1, -1, +1
        extras = dict(mixed_minus=sums + steps, mixed_plus=sums - steps,
                      mean_log_sum_sq_probs=-torch.rand(2 * B, generator=g, dtype=torch.float64))
    return SequenceLogps(sums[:B], sums[B:], counts[:B], counts[B:], token_logps=token_logps, token_mask=mask, **extras)


def observe(loss) -> list[torch.Tensor | object]:
    """Everything the loss can change: two forwards around an optimizer step, requests, description."""
    z = torch.zeros(2 * B, T + 1, dtype=torch.long)
    batch = PreferenceBatch(z, z, z, torch.arange(B), scores=torch.tensor([[0.9, 0.1], [0.6, 0.5], [0.7, 0.2]], dtype=torch.float64))
    seen: list = [loss.logps_request, loss.reference_logps_request, loss.requires_reference]
    for _ in range(2):
        policy = sequences(0, tokens=True)
        reference = sequences(1, tokens=False) if loss.requires_reference else None
        with torch.enable_grad():
            out = loss(policy, reference, batch)
        seen.append(out.losses.detach())
        seen.extend((k, v.detach() if isinstance(v, torch.Tensor) else v) for k, v in sorted(out.metrics.items()))
        loss.after_optimizer_step()
    return seen


def same(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, tuple):
            if x[0] != y[0] or not same([x[1]], [y[1]]):
                return False
        elif isinstance(x, torch.Tensor):
            if not (isinstance(y, torch.Tensor) and x.shape == y.shape and torch.allclose(x.double(), y.double(), rtol=1e-9, atol=1e-12)):
                return False
        elif x != y:
            return False
    return True


CASES = [(name, setting, default) for name in loss_classes() for setting, default in settings(name)]


def test_every_loss_setting_has_a_probe():
    """Derived from the signatures: each setting has another valid value, and the losses build with it."""
    assert len(CASES) > 40
    for name, setting, default in CASES:
        value = alternative(setting, REQUIRED[setting]() if default is inspect.Parameter.empty else default)
        build(name, **{setting: value})


@pytest.mark.parametrize("name, setting, default", CASES, ids=[f"{n}.{s}" for n, s, _ in CASES])
def test_changing_a_loss_setting_changes_the_loss(name, setting, default):
    value = alternative(setting, REQUIRED[setting]() if default is inspect.Parameter.empty else default)
    assert not same(observe(build(name)), observe(build(name, **{setting: value}))), f"{name}({setting}={value!r}) has no effect"


def test_the_observation_sees_a_change_and_no_change():
    """The probe itself: two equal losses observe the same; a beta of 0.1 vs 0.1000001 does not."""
    assert same(observe(L.DPO()), observe(L.DPO()))
    assert not same(observe(L.DPO(beta=0.1)), observe(L.DPO(beta=0.1000001)))


STATEFUL = [lambda: L.EpsilonDPO(beta=0.1, eps=0.05), lambda: L.BCOPair(beta=0.1)]


@pytest.mark.parametrize("make", STATEFUL, ids=["EpsilonDPO", "BCOPair"])
@pytest.mark.parametrize("wrap", [
    lambda loss: L.WeightedLoss([loss]),
    lambda loss: L.WeightedLoss([L.SFT(), loss], weights=[0.0, 1.0]),
    lambda loss: L.WPOWeighted(loss),
    lambda loss: L.LengthDesensitized(loss, alpha=1.0),  # alpha 1: the sums are unchanged
], ids=["weighted", "weighted_second_term", "wpo", "ld_dpo"])
def test_a_composite_passes_the_optimizer_step_to_its_terms(make, wrap):
    """A stateful loss inside a composite or wrapper evolves exactly as alone: epsilon-DPO's beta moves,
    BCO's shift updates (a composite that dropped ``after_optimizer_step`` would freeze them)."""
    alone, inner = make(), make()
    composite = wrap(inner)
    before = {k: v.clone() for k, v in inner.state_dict().items()}
    for _ in range(3):
        observe(alone)
        observe(composite)
    after = inner.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the inner loss's state never moved"
    for k, v in alone.state_dict().items():
        torch.testing.assert_close(after[k], v, rtol=1e-12, atol=1e-12, msg=k)  # LD-DPO re-sums tokens: rounding only


NUMERIC = [(n, s) for n, s, d in CASES if isinstance(d, (int, float)) and not isinstance(d, bool)]


@pytest.mark.parametrize("name, setting", NUMERIC, ids=[f"{n}.{s}" for n, s in NUMERIC])
def test_a_nan_setting_is_refused_naming_it(name, setting):
    """Every numeric setting of every loss refuses NaN at construction, with a message that names it
    (a NaN beta would otherwise train on NaN losses until the non-finite check stops the run)."""
    from lit_align.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        build(name, **{setting: float("nan")})
    assert re.search(rf"\b{setting}\b", str(refused.value)), str(refused.value)


PAPER_DEFAULTS = {
    # the defaults the docstrings document (each loss's paper, or TRL's where the paper gives none);
    # a changed default silently changes every recipe that relies on it
    "AOTPaired": {"beta": 0.1, "label_smoothing": 0.0}, "AOTUnpaired": {"beta": 0.1, "label_smoothing": 0.0},
    "APODown": {"beta": 0.1}, "APOZero": {"beta": 0.1}, "AlphaDivergence": {"alpha": 0.5},
    "BCOPair": {"beta": 0.1, "shift": True}, "CPO": {"beta": 0.1, "alpha": 1.0}, "DPO": {"beta": 0.1, "label_smoothing": 0.0},
    "DPOP": {"beta": 0.1, "lam": 50.0}, "DiscoPOP": {"beta": 0.05, "tau": 0.05}, "EXOPair": {"beta": 0.1, "eps": 0.001},
    "EpsilonDPO": {"beta": 0.01, "eps": 0.01}, "Hinge": {"beta": 0.1}, "IPO": {"beta": 0.1, "length_normalized": True},
    "LengthDesensitized": {"alpha": 0.5, "reference_too": False}, "LengthNormalizedDPO": {"beta": 0.1, "label_smoothing": 0.0},
    "LikelihoodDPO": {"beta": 0.01, "label_smoothing": 0.0}, "MinorDPO": {"beta": 0.1}, "NCAPair": {"beta": 0.1},
    "ODPO": {"beta": 0.1, "alpha": 1.0}, "ORPO": {"lam": 0.1}, "PosteriorDPO": {"beta": 100.0, "label_smoothing": 0.0},
    "RobustDPO": {"beta": 0.1, "label_noise": 0.1}, "SPPOHard": {"beta": 0.1}, "SimPO": {"beta": 2.0, "gamma": 1.0},
}


def test_defaults_are_the_documented_ones():
    got = {}
    for name, setting, default in CASES:
        if isinstance(default, (bool, int, float)):
            got.setdefault(name, {})[setting] = default
    assert got == PAPER_DEFAULTS


def test_default_built_losses_hold_the_documented_defaults():
    """The same defaults as held by losses built without arguments (what a recipe gets when it omits them)."""
    renamed = {("EpsilonDPO", "beta"): "baseline_beta"}
    checked = 0
    for name, values in PAPER_DEFAULTS.items():
        loss = build(name)
        holder = loss.divergence if name in DIVERGENCES else loss
        for setting, expected in values.items():
            value = getattr(holder, renamed.get((name, setting), setting))
            assert float(value) == expected, f"{name}.{setting}"
            checked += 1
    assert checked == sum(len(v) for v in PAPER_DEFAULTS.values())
