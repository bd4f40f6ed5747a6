"""MRPO's reference combination, BCO's running mean, WPO weighting, LD-DPO, composites, validation."""

from __future__ import annotations

import math

import pytest
import torch

from lit_align import losses as L
from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.reference_math import mrpo_adaptive_weight, mrpo_two_reference, multi_reference_logq

TOL = 1e-5


def seq(pw, pl, nw=5, nl=4, **extra) -> SequenceLogps:
    f = lambda v: torch.as_tensor(v, dtype=torch.float64).reshape(-1)  # noqa: E731
    return SequenceLogps(f(pw), f(pl), torch.as_tensor(nw).reshape(-1), torch.as_tensor(nl).reshape(-1), **extra)


def batch(b: int = 1) -> PreferenceBatch:
    z = torch.zeros(2 * b, 4, dtype=torch.long)
    return PreferenceBatch(z, z, z, torch.arange(b))


# --- MRPO ------------------------------------------------------------------------------------------


def test_mrpo_two_reference_numbers():
    """Worked by hand from MRPO's two-reference formulas (Le et al. 2024, arXiv 2405.16388): l1w -10, l1l -14, l2w -12, l2l -13, eta 0.1 -> a = 4 / (4 + 1 + 1e-6) = 0.8;
    bw -11, bl -13.5, s = 11/24.5, eta_w 0.044898, eta_l 0.055102; l1c_w = clamp(-10, -12.538776,
    -11.461224) = -11.461224, l1c_l = clamp(-14, -13.716327, -12.283673) = -13.716327;
    log q = l1c + l2 - log(0.8 e^l1c + 0.2 e^l2) -> -11.913017, -13.190108.
    DPO (beta 0.1) with pw -9, pl -13 on them: -ls(0.1 ((-9 + 11.913017) - (-13 + 13.190108))) = 0.566241."""
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    l1w, l1l, l2w, l2l = t(-10.0), t(-14.0), t(-12.0), t(-13.0)
    assert float(mrpo_adaptive_weight(l1w, l1l, l2w, l2l)) == pytest.approx(0.8, abs=1e-6)
    qw, ql = mrpo_two_reference(l1w, l1l, l2w, l2l, eta=0.1)
    assert float(qw) == pytest.approx(-11.913017, abs=TOL)
    assert float(ql) == pytest.approx(-13.190108, abs=TOL)
    out = L.DPO(0.1)(seq(-9.0, -13.0), seq(qw, ql), batch())
    assert float(out.losses) == pytest.approx(0.566241, abs=TOL)


def test_multi_reference_logq_is_a_weighted_harmonic_mean():
    """1/q = sum w_k / p_k: equal log-probs give that log-prob; weights (0.5, 0.5) of p = e^-1, e^-3
    give q = 1 / (0.5 e + 0.5 e^3), i.e. log q = -log(0.5 e + 0.5 e^3)."""
    logps = torch.tensor([[-2.0], [-2.0]])
    assert float(multi_reference_logq(logps, torch.log(torch.tensor([[0.3], [0.7]])))) == pytest.approx(-2.0, abs=1e-6)
    logps = torch.tensor([-1.0, -3.0], dtype=torch.float64)
    expected = -math.log(0.5 * math.e + 0.5 * math.e**3)
    assert float(multi_reference_logq(logps, torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64)))) == pytest.approx(expected)


def test_mrpo_fixed_weight_and_validation():
    """weight 1 puts all harmonic weight on reference 2 (see the docstring): log q = l2."""
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    qw, ql = mrpo_two_reference(t(-10.0), t(-14.0), t(-12.0), t(-13.0), eta=0.1, weight=1.0)
    assert (float(qw), float(ql)) == pytest.approx((-12.0, -13.0))
    with pytest.raises(ValueError, match="eta"):
        mrpo_two_reference(t(-1.0), t(-1.0), t(-1.0), t(-1.0), eta=-0.1)


# --- BCO running mean -----------------------------------------------------------------------------


def test_bco_running_mean_shift_and_checkpoint():
    """Step 1 (delta 0): rewards 0.1 * [1.0, -0.5] -> delta = 0.25 / 2 = 0.025 after the optimizer step.
    Step 2 on rewards 0.1 * [0.3, 0.1] (sum 0.04): delta = (0.025 * 2 + 0.04) / 4 = 0.0225.
    With delta 0.02 on the common example: -ls(0.1 - 0.02) - ls(-(-0.05 - 0.02)) = 1.312707 (derived).
    Validation forwards (no grad) never move it; the state round-trips through state_dict."""
    loss = L.BCOPair(0.1)
    ref = seq(-11.0, -11.5)
    out = loss(seq(-10.0, -12.0), ref, batch())
    assert float(out.losses.detach()) == pytest.approx(1.312856, abs=TOL)  # delta still 0
    loss.after_optimizer_step()
    assert float(loss.running_mean) == pytest.approx(0.025)
    with torch.no_grad():
        loss(seq(50.0, 50.0), ref, batch())  # validation: ignored
    loss(seq(-10.7, -11.4), ref, batch())  # rw 0.3, rl 0.1
    loss.after_optimizer_step()
    assert float(loss.running_mean) == pytest.approx(0.0225)
    assert float(loss.running_count) == 4
    fresh = L.BCOPair(0.1)
    fresh.load_state_dict(loss.state_dict())
    assert float(fresh.running_mean) == pytest.approx(0.0225)
    fresh.running_mean.fill_(0.02)
    out = fresh(seq(-10.0, -12.0), ref, batch())
    assert float(out.losses.detach()) == pytest.approx(1.312707, abs=TOL)
    assert float(out.metrics["bco/running_mean"]) == pytest.approx(0.02)
    assert L.BCOPair(0.1).to(torch.bfloat16).running_mean.dtype == torch.float64


# --- WPO ------------------------------------------------------------------------------------------


def test_wpo_weight():
    """Derived: chosen mean log-prob -10/5 = -2, its mean log sum p^2 = -1.5 -> w(yw) = e^-0.5;
    rejected -12/4 = -3, statistic -2.0 -> w(yl) = e^-1; pair weight e^-1.5 = 0.223130;
    WPO-DPO = 0.223130 * 0.620957 = 0.138556. The weight is detached: the gradient is w * dDPO."""
    policy = seq(-10.0, -12.0, mean_log_sum_sq_probs=torch.tensor([-1.5, -2.0], dtype=torch.float64))
    policy.chosen.requires_grad_(True)
    loss = L.WPOWeighted(L.DPO(0.1))
    assert loss.logps_request.sum_sq_probs and loss.requires_reference
    out = loss(policy, seq(-11.0, -11.5), batch())
    assert float(out.metrics["wpo/weight"]) == pytest.approx(math.exp(-1.5), abs=1e-6)
    assert float(out.losses.detach()) == pytest.approx(0.138556, abs=TOL)
    out.losses.sum().backward()
    # d(-ls(0.1 D))/dpw = -0.1 s(-0.15) = -0.046257; times the weight
    assert float(policy.chosen.grad) == pytest.approx(-0.1 * torch.sigmoid(torch.tensor(-0.15)).item() * math.exp(-1.5), abs=1e-6)


def test_wpo_statistic_from_chunked_logps():
    """Uniform logits over V tokens: log p = -log V and log sum p^2 = -log V, so every weight is 1."""
    from torch import nn

    from lit_align.logprobs import chunked_logps

    head = nn.Linear(4, 5, bias=False)
    nn.init.zeros_(head.weight)
    ids = torch.tensor([[1, 2, 3, 0], [1, 3, 2, 4]])
    b = PreferenceBatch(ids, torch.ones_like(ids), torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]]), torch.tensor([0]))
    policy = chunked_logps(torch.randn(2, 4, 4), head, b, LogpsRequest(sum_sq_probs=True), chunk_size=2)
    assert torch.allclose(L.WPOWeighted.weights(policy), torch.ones(1))


# --- LD-DPO ---------------------------------------------------------------------------------------


def ld_policy(tokens: torch.Tensor | None = None) -> SequenceLogps:
    """Chosen tokens [-1, -2, -3] (3), rejected [-0.5, -1] (2), after a one-token prompt, T-1 = 4."""
    if tokens is None:
        tokens = torch.tensor([[-1.0, -2.0, -3.0, 0.0], [-0.5, -1.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    sums = (tokens * mask).sum(-1)
    return SequenceLogps(sums[:1], sums[1:], torch.tensor([3]), torch.tensor([2]), token_logps=tokens * mask, token_mask=mask)


def test_ld_dpo_desensitised_sums():
    """l_p = min(3, 2) = 2: chosen -1 - 2 + 0.5 * -3 = -4.5, rejected -1.5 (no tail).
    With a zero reference and DPO beta 0.1: -ls(0.1 (-4.5 + 1.5)) = -ls(-0.3) = 0.854355.
    The tail token's gradient is alpha times a front token's. alpha 1 is the wrapped loss unchanged:
    -ls(0.1 (-6 + 1.5)) = -ls(-0.45) = 0.943249."""
    leaf = torch.tensor([[-1.0, -2.0, -3.0, 0.0], [-0.5, -1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    policy = ld_policy(leaf)
    zero = seq(0.0, 0.0, 3, 2)
    loss = L.LengthDesensitized(L.DPO(0.1), alpha=0.5)
    assert loss.logps_request.token_logps
    out = loss(policy, zero, batch())
    assert float(out.losses.detach()) == pytest.approx(0.854355, abs=TOL)
    assert float(out.metrics["ld/dropped_logps"]) == pytest.approx(-1.5)
    out.losses.sum().backward()
    assert float(leaf.grad[0, 2]) == pytest.approx(0.5 * float(leaf.grad[0, 0]))
    assert float(leaf.grad[0, 3]) == 0.0  # padding
    full = L.LengthDesensitized(L.DPO(0.1), alpha=1.0)(ld_policy(), zero, batch())
    assert float(full.losses.detach()) == pytest.approx(0.943249, abs=TOL)


def test_ld_dpo_reference_too_needs_token_logps():
    loss = L.LengthDesensitized(L.DPO(0.1), alpha=0.5, reference_too=True)
    with pytest.raises(ValueError, match="per-token"):
        loss(ld_policy(), seq(0.0, 0.0, 3, 2), batch())
    out = loss(ld_policy(), ld_policy(), batch())  # same on both sides: D = 0 -> ln 2
    assert float(out.losses.detach()) == pytest.approx(math.log(2), abs=TOL)


def test_wrappers_compose():
    """WPO outside LD-DPO outside DPO: requests merge, state hooks pass through, names describe."""
    loss = L.WPOWeighted(L.LengthDesensitized(L.EpsilonDPO(eps=0.01)))
    request = loss.logps_request
    assert request.sum_sq_probs and request.token_logps and request.mix_eps == 0.01
    assert loss.requires_reference_logits
    assert "EpsilonDPO" in loss.describe()


# --- composites and validation ----------------------------------------------------------------------


def test_weighted_loss_prefixes_and_weights():
    """0.5 * DPOP + 2 * SFT on the common example: 0.5 * 0.620957 + 2 * 2 = 4.310479."""
    loss = L.WeightedLoss([L.DPOP(0.1), L.SFT()], [0.5, 2.0])
    out = loss(seq(-10.0, -12.0), seq(-11.0, -11.5), batch())
    assert float(out.losses) == pytest.approx(4.310479, abs=TOL)
    assert {"dpop/loss", "dpop/rewards/margins", "dpop/dpop/penalty", "sft/loss", "sft/nll", "rewards/margins"} <= set(out.metrics)
    assert loss.describe() == "0.5*dpop + 2*sft"


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: L.DPO(beta=0), "beta must be > 0, got 0"),
        (lambda: L.DPO(beta=-0.1), "beta must be > 0, got -0.1"),
        (lambda: L.DPO(label_smoothing=0.5), "label_smoothing"),
        (lambda: L.RobustDPO(label_noise=0.5), r"label_noise must be in \[0.0, 0.5\), got 0.5"),
        (lambda: L.EXOPair(eps=0), "eps must be in"),
        (lambda: L.DPOP(lam=-1), "lam must be >= 0, got -1"),
        (lambda: L.ORPO(lam=-0.1), "lam must be >= 0"),
        (lambda: L.SimPO(beta=0), "beta"),
        (lambda: L.SimPO(gamma=-1), "gamma"),
        (lambda: L.CPO(alpha=-1), "alpha"),
        (lambda: L.ODPO(alpha=-1), "alpha"),
        (lambda: L.DiscoPOP(tau=0), "tau"),
        (lambda: L.EpsilonDPO(eps=0), "eps must be > 0"),
        (lambda: L.EpsilonDPO(eps=1.5), "eps must be < 1"),
        (lambda: L.EpsilonDPO(beta=-1), "beta"),
        (lambda: L.IPO(beta=0), "beta"),
        (lambda: L.LengthDesensitized(L.DPO(), alpha=1.5), "alpha must be in"),
        (lambda: L.AlphaDivergence(1.0), "alpha must be finite and != 1"),
        (lambda: L.WeightedLoss([L.DPO()], [-1.0]), "weights must be >= 0"),
        (lambda: L.WeightedLoss([L.DPO()], [1.0, 1.0]), "1 losses but 2 weights"),
        (lambda: L.WeightedLoss([]), "at least one"),
        (lambda: L.AOTPaired(label_smoothing=0.7), "label_smoothing"),
        (lambda: L.BCOPair(beta=float("nan")), "beta"),
    ],
)
def test_invalid_hyper_parameters_name_the_value(build, match):
    """One line naming the parameter (and value): startup stops at construction."""
    with pytest.raises(ValueError, match=match) as info:
        build()
    assert "\n" not in str(info.value)


def test_every_loss_is_exported_and_documented():
    """Every exported loss has a docstring naming its paper (arXiv id) or its formula source."""
    import inspect

    for name in L.__all__:
        obj = getattr(L, name)
        assert inspect.isclass(obj), name
        assert obj.__doc__, name
    for cls in (L.DPO, L.RobustDPO, L.DPOP, L.MinorDPO, L.EpsilonDPO, L.IPO, L.SimPO, L.ORPO, L.CPO, L.ODPO,
                L.BCOPair, L.NCAPair, L.EXOPair, L.APOZero, L.APODown, L.SPPOHard, L.AOTPaired, L.AOTUnpaired,
                L.DiscoPOP, L.WPOWeighted, L.LengthDesensitized):
        assert "arXiv" in cls.__doc__, cls.__name__
