"""What the losses log: every metric's name and value, recomputed here from the inputs.

Three pairs (policy / reference log-probs, token counts and scores below); every value is written
out from its definition in the loss's docstring, independently of the loss code. Metric names are
part of the interface (dashboards, the study tables read them), so they are pinned too.
"""

from __future__ import annotations

import math

import pytest
import torch

from lit_align import losses as L
from lit_align.batch import PreferenceBatch, SequenceLogps

PW, PL = [-10.0, -6.0, -9.0], [-12.0, -5.0, -7.0]
QW, QL = [-11.0, -5.5, -9.5], [-11.5, -6.0, -7.5]
NW, NL = [5, 3, 4], [4, 2, 5]
SCORES = [[0.9, 0.1], [0.7, 0.2], [0.6, 0.5]]
BETA = 0.1


def seq(chosen, rejected) -> SequenceLogps:
    return SequenceLogps(torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64), torch.tensor(NW), torch.tensor(NL))


def run(loss):
    z = torch.zeros(6, 4, dtype=torch.long)
    batch = PreferenceBatch(z, z, z, torch.arange(3), scores=torch.tensor(SCORES, dtype=torch.float64))
    return loss(seq(PW, PL), seq(QW, QL) if loss.requires_reference else None, batch)


def mean(xs) -> float:
    return sum(xs) / len(xs)


def rewards(beta: float, sw: list[float], sl: list[float]) -> dict[str, float]:
    return {"rewards/chosen": mean([beta * x for x in sw]), "rewards/rejected": mean([beta * x for x in sl]),
            "rewards/margins": mean([beta * (x - y) for x, y in zip(sw, sl)]),
            "rewards/accuracies": mean([float(x > y) for x, y in zip(sw, sl)])}


RW = [p - q for p, q in zip(PW, QW)]  # [1, -0.5, 0.5]
RL = [p - q for p, q in zip(PL, QL)]  # [-0.5, 1, 0.5]
PW_BAR = [p / n for p, n in zip(PW, NW)]
PL_BAR = [p / n for p, n in zip(PL, NL)]


def log_odds(m: float) -> float:
    return m - math.log(1 - math.exp(m))


EXPECTED = {
    "DPO": lambda: rewards(BETA, RW, RL),
    "DPOP": lambda: rewards(BETA, RW, RL) | {"dpop/penalty": mean([max(0.0, -x) for x in RW]), "dpop/active": 1 / 3},
    "ODPO": lambda: rewards(BETA, RW, RL) | {"odpo/offset": mean([math.log(w - l) for w, l in SCORES])},
    "CPO": lambda: rewards(BETA, PW, PL) | {"cpo/nll": mean([-p / n for p, n in zip(PW, NW)])},
    "ORPO": lambda: rewards(0.1, PW_BAR, PL_BAR) | {"orpo/nll": mean([-p for p in PW_BAR]),
                                                     "orpo/log_odds": mean([log_odds(w) - log_odds(l) for w, l in zip(PW_BAR, PL_BAR)])},
    "SimPO": lambda: rewards(2.0, PW_BAR, PL_BAR),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metrics_are_named_and_valued_by_their_definition(name):
    out = run(getattr(L, name)(**({"beta": BETA} if name not in ("ORPO", "SimPO") else {})))
    expected = EXPECTED[name]()
    assert set(out.metrics) == set(expected)
    for key, value in expected.items():
        got = out.metrics[key]
        assert isinstance(got, torch.Tensor) and got.dim() == 0 and not got.requires_grad, key
        assert float(got) == pytest.approx(value, abs=1e-7), key  # accuracies are float32 means


def test_weighted_loss_prefixes_terms_and_exposes_the_first_rewards():
    """CPO-style composite DPO + SFT: each term under its name, its loss as <name>/loss, and the first
    term's reward metrics also unprefixed."""
    out = run(L.WeightedLoss([L.DPO(beta=BETA), L.SFT()], weights=[1.0, 0.5]))
    dpo, sft = run(L.DPO(beta=BETA)), run(L.SFT())
    assert set(out.metrics) == {f"dpo/{k}" for k in dpo.metrics} | {f"sft/{k}" for k in sft.metrics} | {"dpo/loss", "sft/loss"} | set(rewards(BETA, RW, RL))
    assert float(out.metrics["sft/loss"]) == pytest.approx(mean([-p / n for p, n in zip(PW, NW)]))
    for key, value in rewards(BETA, RW, RL).items():
        assert float(out.metrics[key]) == pytest.approx(value)
    torch.testing.assert_close(out.losses, dpo.losses + 0.5 * sft.losses)
    assert out.losses.shape == (3,)


def test_wpo_weight_metric_is_the_mean_pair_weight():
    """w = exp(mean log p(yw) - stat_w + mean log p(yl) - stat_l) per pair (WPO, arXiv 2406.11827)."""
    stat = [-1.5, -1.0, -2.0, -2.5, -1.2, -1.1]
    policy = seq(PW, PL)
    policy.mean_log_sum_sq_probs = torch.tensor(stat, dtype=torch.float64)
    z = torch.zeros(6, 4, dtype=torch.long)
    out = L.WPOWeighted(L.DPO(beta=BETA))(policy, seq(QW, QL), PreferenceBatch(z, z, z, torch.arange(3)))
    weights = [math.exp(PW_BAR[i] - stat[i] + PL_BAR[i] - stat[3 + i]) for i in range(3)]
    assert float(out.metrics["wpo/weight"]) == pytest.approx(mean(weights))
    dpo = run(L.DPO(beta=BETA)).losses
    torch.testing.assert_close(out.losses, dpo * torch.tensor(weights, dtype=torch.float64))


@pytest.mark.parametrize("gap, ok", [(0.5, True), (1e-3, True), (0.0, False), (-0.2, False)])
def test_odpo_accepts_any_positive_score_gap(gap, ok):
    z = torch.zeros(2, 4, dtype=torch.long)
    batch = PreferenceBatch(z, z, z, torch.tensor([7]), scores=torch.tensor([[0.5 + gap, 0.5]], dtype=torch.float64))
    policy, reference = SequenceLogps(*(torch.tensor([x], dtype=torch.float64) for x in (-1.0, -2.0, 1, 1))), \
        SequenceLogps(*(torch.tensor([x], dtype=torch.float64) for x in (-1.5, -1.5, 1, 1)))
    if ok:
        out = L.ODPO(beta=BETA)(policy, reference, batch)
        assert float(out.metrics["odpo/offset"]) == pytest.approx(math.log(gap))
    else:
        with pytest.raises(ValueError, match=r"score_chosen > score_rejected; dataset row 7 has a gap of"):
            L.ODPO(beta=BETA)(policy, reference, batch)
    with pytest.raises(ValueError, match=r"^ODPO needs per-pair scores: add score_chosen / score_rejected columns"):
        L.ODPO()(policy, reference, PreferenceBatch(z, z, z, torch.tensor([7])))


def ls(x: float) -> float:
    return -math.log1p(math.exp(-x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


PER_PAIR = {
    # loss -> per-pair value from its definition on the three pairs (rw, rl differ from +-1, so a
    # product and a quotient by the log-ratio cannot coincide as they do at rw = 1)
    "NCAPair": lambda rw, rl, nw, nl: -ls(BETA * rw) - 0.5 * ls(-BETA * rw) - 0.5 * ls(-BETA * rl),
    "APOZero": lambda rw, rl, nw, nl: (1 - sig(BETA * rw)) + sig(BETA * rl),
    "APODown": lambda rw, rl, nw, nl: sig(BETA * rw) + (1 - sig(BETA * (rw - rl))),
    "MinorDPO": lambda rw, rl, nw, nl: -ls(BETA * rw - BETA * max(0.0, rl)),
    "LengthNormalizedDPO": lambda rw, rl, nw, nl: -ls(BETA * (rw / nw - rl / nl)),
    "IPO": lambda rw, rl, nw, nl: (rw / nw - rl / nl - 1 / (2 * BETA)) ** 2,
}


def test_simpo_per_pair_by_its_definition():
    """SimPO (arXiv 2405.14734): -ls(beta (pw/|yw| - pl/|yl|) - gamma); margins 1, 0.5, -0.85 here."""
    out = run(L.SimPO(beta=2.0, gamma=0.7))
    expected = [-ls(2.0 * (w - l) - 0.7) for w, l in zip(PW_BAR, PL_BAR)]
    torch.testing.assert_close(out.losses, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(PER_PAIR))
def test_per_pair_losses_by_their_definition(name):
    out = run(getattr(L, name)(beta=BETA))
    expected = [PER_PAIR[name](*args) for args in zip(RW, RL, NW, NL)]
    torch.testing.assert_close(out.losses, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_one_token_completions_are_not_rescaled():
    """Length normalisation divides by the token count (clamped at 1 only for empty completions): a
    1-token completion's mean is its sum."""
    policy, reference = seq([-2.0, -3.0, -1.0], [-4.0, -1.0, -2.0]), seq([-1.0] * 3, [-1.0] * 3)
    for p in (policy, reference):
        p.chosen_tokens, p.rejected_tokens = torch.tensor([1, 1, 0]), torch.tensor([1, 0, 1])
    z = torch.zeros(6, 4, dtype=torch.long)
    batch = PreferenceBatch(z, z, z, torch.arange(3))
    out = L.LengthNormalizedDPO(beta=BETA)(policy, reference, batch)
    expected = [-ls(BETA * ((-2.0 + 1.0) - (-4.0 + 1.0))), -ls(BETA * ((-3.0 + 1.0) - (-1.0 + 1.0))), -ls(BETA * ((-1.0 + 1.0) - (-2.0 + 1.0)))]
    torch.testing.assert_close(out.losses, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(L.SFT()(policy, None, batch).losses, torch.tensor([2.0, 3.0, 1.0], dtype=torch.float64))
    ipo = L.IPO(beta=BETA)(policy, reference, batch).losses
    expected = [((-2.0 + 1.0) - (-4.0 + 1.0) - 5.0) ** 2, ((-3.0 + 1.0) - (-1.0 + 1.0) - 5.0) ** 2, ((-1.0 + 1.0) - (-2.0 + 1.0) - 5.0) ** 2]
    torch.testing.assert_close(ipo, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["AOTPaired", "AOTUnpaired"])
def test_aot_label_smoothing_mixes_both_directions(name):
    """With smoothing e the per-pair loss is -(1-e) ls(z) - e ls(-z), z recovered from the e = 0 loss
    (-ls(z) = softplus(-z)); the reward metrics are the standard ones."""
    plain, smoothed = run(getattr(L, name)(beta=BETA)), run(getattr(L, name)(beta=BETA, label_smoothing=0.2))
    z = [-math.log(math.expm1(v)) for v in plain.losses.tolist()]
    expected = [-(0.8) * ls(x) - 0.2 * ls(-x) for x in z]
    torch.testing.assert_close(smoothed.losses, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-9)
    for key, value in rewards(BETA, RW, RL).items():
        assert float(plain.metrics[key]) == pytest.approx(value, abs=1e-7), key


def test_weighted_loss_defaults_names_and_batch():
    """Default weight 1 (the sum is the term itself); repeated classes numbered; every term sees the batch
    (ODPO reads its scores); every metric a tensor."""
    alone = run(L.ODPO(beta=BETA))
    inside = run(L.WeightedLoss([L.ODPO(beta=BETA)]))
    torch.testing.assert_close(inside.losses, alone.losses, rtol=0, atol=0)
    two = run(L.WeightedLoss([L.DPO(beta=BETA), L.DPO(beta=0.5)]))
    assert {"dpo/loss", "dpo2/loss"} <= set(two.metrics)
    assert float(two.metrics["dpo2/rewards/margins"]) == pytest.approx(mean([0.5 * (w - l) for w, l in zip(RW, RL)]))
    assert all(isinstance(v, torch.Tensor) for v in two.metrics.values())
    with pytest.raises(ValueError, match=r"^WeightedLoss needs at least one loss$"):
        L.WeightedLoss([])


def test_odpo_names_the_first_row_without_a_positive_gap():
    z = torch.zeros(4, 4, dtype=torch.long)
    batch = PreferenceBatch(z, z, z, torch.tensor([3, 9]), scores=torch.tensor([[0.9, 0.4], [0.5, 0.5]], dtype=torch.float64))
    two = SequenceLogps(*(torch.tensor(v, dtype=torch.float64) for v in ([-1.0, -2.0], [-2.0, -1.0])), torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"dataset row 9 has a gap of 0$"):
        L.ODPO(beta=BETA)(two, two, batch)


@pytest.mark.parametrize("build, ok", [
    (lambda: L.EXOPair(eps=0.5), False), (lambda: L.EXOPair(eps=0.499), True),
    (lambda: L.EpsilonDPO(eps=1.0), False), (lambda: L.EpsilonDPO(eps=0.999), True),
    (lambda: L.DPOP(lam=0.0), True), (lambda: L.ODPO(alpha=0.0), True), (lambda: L.CPO(alpha=0.0), True),
    (lambda: L.DPO(label_smoothing=0.0), True), (lambda: L.DPO(label_smoothing=0.5), False),
    (lambda: L.RobustDPO(label_noise=0.0), True), (lambda: L.RobustDPO(label_noise=0.5), False),
], ids=["exo-0.5", "exo-0.499", "eps-1", "eps-0.999", "dpop-lam-0", "odpo-alpha-0", "cpo-alpha-0",
        "dpo-ls-0", "dpo-ls-0.5", "rdpo-0", "rdpo-0.5"])
def test_range_boundaries(build, ok):
    """Each documented bound, on both sides: 0 is allowed where the docstring says 'off' (lam 0, alpha 0,
    no smoothing); 0.5 and 1 are refused where the range is open."""
    if ok:
        build()
    else:
        with pytest.raises(ValueError, match=r"must be"):
            build()


def test_bco_per_pair_and_its_shift_over_an_accumulation_window():
    """BCO (arXiv 2404.04656) per pair: -ls(beta rw - delta) - ls(-(beta rl - delta)). delta starts at 0;
    after an optimizer step whose window held two micro-batches it is the mean of all their rewards
    beta * [rw..., rl...] (both micro-batches counted, not the difference of their sums)."""
    loss = L.BCOPair(beta=BETA)
    first = run(loss)
    expected = [-ls(BETA * w) - ls(-(BETA * l)) for w, l in zip(RW, RL)]
    torch.testing.assert_close(first.losses, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    run(loss)  # a second micro-batch of the same window: the same six rewards again
    loss.after_optimizer_step()
    rewards_seen = [BETA * x for x in RW + RL] * 2
    delta = mean(rewards_seen)
    assert float(loss.running_mean) == pytest.approx(delta) and float(loss.running_count) == 12
    shifted = run(loss)
    expected = [-ls(BETA * w - delta) - ls(-(BETA * l - delta)) for w, l in zip(RW, RL)]
    torch.testing.assert_close(shifted.losses, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_dpop_penalty_is_inactive_at_a_tie():
    """DPOP's penalty max(0, qw - pw) is 0 when the policy's chosen log-prob equals the reference's, and
    ``dpop/active`` counts only pairs strictly below it."""
    z = torch.zeros(4, 4, dtype=torch.long)
    policy = SequenceLogps(torch.tensor([-5.0, -6.0], dtype=torch.float64), torch.tensor([-7.0, -7.0], dtype=torch.float64), torch.ones(2), torch.ones(2))
    reference = SequenceLogps(torch.tensor([-5.0, -5.0], dtype=torch.float64), torch.tensor([-6.0, -6.0], dtype=torch.float64), torch.ones(2), torch.ones(2))
    out = L.DPOP(beta=BETA)(policy, reference, PreferenceBatch(z, z, z, torch.arange(2)))
    assert float(out.metrics["dpop/active"]) == 0.5 and float(out.metrics["dpop/penalty"]) == pytest.approx(0.5)
