"""Multi-reference (MRPO) strategies: the paper's numbers through the strategy, K references in training."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers_reference import data, fit, tiny_source
from lit_align.batch import LogpsRequest, SequenceLogps
from lit_align.data.collate import PairCollator
from lit_align.logprobs import sequence_logps
from lit_align.losses import DPO
from lit_align.reference import MRPOReference, MultiReference
from lit_align.reference_math import mrpo_two_reference


def seq(chosen: float, rejected: float) -> SequenceLogps:
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    return SequenceLogps(t(chosen), t(rejected), torch.tensor([5]), torch.tensor([4]))


def test_two_reference_mode_reproduces_the_worked_example_and_the_dpo_loss():
    """l1 (-10, -14), l2 (-12, -13), eta 0.1 -> a = 4/5 = 0.8, log q (-11.913017, -13.190108);
    then DPO with pw -9, pl -13, beta 0.1: D = (-9 + 11.913017) - (-13 + 13.190108) = 2.722909,
    L = -logsigmoid(0.2722909) = 0.566241."""
    strategy = MRPOReference(eta=0.1)
    q = strategy.combine([seq(-10, -14), seq(-12, -13)])
    assert q.chosen.item() == pytest.approx(-11.913017, abs=1e-6)
    assert q.rejected.item() == pytest.approx(-13.190108, abs=1e-6)
    assert strategy.metrics()["ref/mrpo_weight"] == pytest.approx(0.8, abs=1e-6)
    out = DPO(beta=0.1)(seq(-9, -13), q, None)
    assert out.losses.item() == pytest.approx(0.566241, abs=1e-6)


def test_general_k_adaptive_weights():
    """Margins 4 and 1 -> w proportional to (1/4, 1/1) = (0.2, 0.8) (K = 2: MRPO's a on the other reference);
    log q_w = -logsumexp(log 0.2 + 10, log 0.8 + 12) = -(12 + log(0.8 + 0.2 e^-2)) = -11.810130;
    log q_l = -logsumexp(log 0.2 + 14, log 0.8 + 13) = -(14 + log(0.2 + 0.8 e^-1)) = -13.295395
    (the same per-pair weights on both sides; no clipping in the general mode)."""
    strategy = MultiReference(sources=[None, None], adaptive=True)
    q = strategy.combine([seq(-10, -14), seq(-12, -13)])
    assert q.chosen.item() == pytest.approx(-(12 + math.log(0.8 + 0.2 * math.exp(-2))), abs=1e-5)
    assert q.rejected.item() == pytest.approx(-(14 + math.log(0.2 + 0.8 * math.exp(-1))), abs=1e-5)
    assert strategy.metrics()["ref/weight_0"] == pytest.approx(0.2, abs=1e-6)


def test_fixed_weights_and_identical_references():
    """Identical references give q = l for any weights (1/q = sum_k w_k / p = 1/p);
    weights (1, 3) normalise to (0.25, 0.75): -logsumexp(log .25 + 10, log .75 + 12) = -(12 + log(.75 + .25 e^-2))."""
    same = MultiReference(sources=[None, None, None], weights=[1.0, 2.0, 5.0]).combine([seq(-7, -8)] * 3)
    assert same.chosen.item() == pytest.approx(-7.0, abs=1e-9) and same.rejected.item() == pytest.approx(-8.0, abs=1e-9)
    q = MultiReference(sources=[None, None], weights=[1.0, 3.0]).combine([seq(-10, -14), seq(-12, -13)])
    assert q.chosen.item() == pytest.approx(-(12 + math.log(0.75 + 0.25 * math.exp(-2))), abs=1e-9)
    with pytest.raises(ValueError, match="one per source"):
        MultiReference(sources=[None, None], weights=[1.0])
    with pytest.raises(ValueError, match="not both"):
        MultiReference(sources=[None, None], weights=[1.0, 1.0], adaptive=True)
    with pytest.raises(ValueError, match="eta"):
        MRPOReference(eta=-0.1)


def test_mrpo_trains_with_a_second_model_and_its_reference_equals_the_closed_form(tmp_path):
    """Reference 1 is another tiny model (seed 1), reference 2 the policy's start; the strategy's
    q on a batch equals mrpo_two_reference of the two frozen models' own log-probs."""
    dm = data(tmp_path)
    strategy = MRPOReference(source=tiny_source(seed=1), eta=0.1)
    module, trainer = fit(tmp_path, strategy, steps=2, dm=dm)
    assert len(strategy.reference_models()) == 2 and not any(p.requires_grad for p in strategy.parameters())
    assert 0.0 < trainer.callback_metrics["train/ref/mrpo_weight"].item() < 1.0
    batch = PairCollator(257, 8)(dm.train_set.pairs[:4])
    q = strategy.logps(module.policy, batch, LogpsRequest())
    l1 = sequence_logps(tiny_source(seed=1).load_model().eval(), batch)
    l2 = sequence_logps(tiny_source(seed=0).load_model().eval(), batch)
    qw, ql = mrpo_two_reference(l1.chosen.double(), l1.rejected.double(), l2.chosen.double(), l2.rejected.double(), eta=0.1)
    torch.testing.assert_close(q.chosen.double(), qw, rtol=0, atol=1e-5)
    torch.testing.assert_close(q.rejected.double(), ql, rtol=0, atol=1e-5)
