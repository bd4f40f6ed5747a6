"""Numeric tests of every pairwise / reference-free loss on hand-built log-probs (no model).

Common example: beta 0.1, pw -10, pl -12, qw -11, ql -11.5, |yw| 5, |yl| 4 -> rw 1.0, rl -0.5,
D 1.5. Expected numbers are worked by hand from each loss's paper (cited by arXiv id in the loss's
docstring), the derivation beside the number or in the test's docstring (float64 arithmetic by hand /
in a calculator).
"""

from __future__ import annotations

import math

import pytest
import torch

from lit_align.batch import PreferenceBatch, SequenceLogps
from lit_align import losses as L

TOL = 1e-5


def seq(pw: float, pl: float, nw: int = 5, nl: int = 4, grad: bool = False) -> SequenceLogps:
    chosen = torch.tensor([pw], dtype=torch.float64, requires_grad=grad)
    rejected = torch.tensor([pl], dtype=torch.float64, requires_grad=grad)
    return SequenceLogps(chosen, rejected, torch.tensor([nw]), torch.tensor([nl]))


def batch(b: int = 1, scores: tuple[float, float] | None = None) -> PreferenceBatch:
    z = torch.zeros(2 * b, 4, dtype=torch.long)
    sc = torch.tensor([scores], dtype=torch.float64) if scores else None
    return PreferenceBatch(z, z, z, torch.arange(b), scores=sc)


def common(loss, grad: bool = False, **kw):
    policy = seq(-10.0, -12.0, grad=grad)
    reference = seq(-11.0, -11.5)
    return loss(policy, reference if loss.requires_reference else None, batch(**kw)), policy


def value(out) -> float:
    return float(out.losses.detach().sum())


@pytest.mark.parametrize(
    "loss, expected",
    [
        (L.DPO(0.1), 0.620957),  # -ls(0.15)
        (L.DPO(0.1, label_smoothing=0.1), 0.635957),  # -0.9 ls(0.15) - 0.1 ls(-0.15)
        (L.RobustDPO(0.1, label_noise=0.1), 0.602207),  # [-0.9 ls(0.15) + 0.1 ls(-0.15)] / 0.8
        (L.IPO(0.1), 21.855625),  # (1/5 + 0.5/4 - 5)^2 = (-4.675)^2
        (L.IPO(0.1, length_normalized=False), 12.25),  # (1.5 - 5)^2
        (L.Hinge(0.1), 0.85),  # relu(1 - 0.15)
        (L.BCOPair(0.1, shift=False), 1.312856),  # -ls(0.1) - ls(0.05)
        (L.NCAPair(0.1), 1.350825),  # -ls(0.1) - 0.5 ls(-0.1) - 0.5 ls(0.05)
        (L.APOZero(0.1), 0.962523),  # (1 - s(0.1)) + s(-0.05)
        (L.APODown(0.1), 0.987549),  # s(0.1) + (1 - s(0.15))
        (L.SPPOHard(0.1), 36.25),  # (1 - 5)^2 + (-0.5 + 5)^2 = 16 + 20.25
        (L.DiscoPOP(beta=0.1, tau=0.05), 0.849338),  # z 0.15, m s(3): -ls(z)(1-m) + e^-z m
        (L.LengthNormalizedDPO(0.1), 0.677029),  # -ls(0.1 (1/5 + 0.5/4)) = -ls(0.0325)
        (L.MinorDPO(0.1), 0.644397),  # -ls(0.1 * 1 - 0.1 * max(0, -0.5)) = -ls(0.1)
    ],
    ids=lambda x: x if isinstance(x, float) else type(x).__name__,
)
def test_common_example_numbers(loss, expected):
    """Each loss on the common example reproduces the number worked by hand beside it."""
    out, _ = common(loss)
    assert value(out) == pytest.approx(expected, abs=TOL)


def test_dpo_standard_metrics():
    """rewards: chosen 0.1 * 1.0, rejected 0.1 * -0.5, margin 0.15, accuracy 1."""
    out, _ = common(L.DPO(0.1))
    m = {k: float(v) for k, v in out.metrics.items()}
    assert m["rewards/chosen"] == pytest.approx(0.1)
    assert m["rewards/rejected"] == pytest.approx(-0.05)
    assert m["rewards/margins"] == pytest.approx(0.15)
    assert m["rewards/accuracies"] == 1.0


def test_dpop_value_and_gradients():
    """DPOP (Pal et al. 2024, arXiv 2402.13228), worked by hand: pw -11.2, pl -12, qw -11, ql -11.5 -> D 0.3, penalty 0.2,
    z = 0.1 (D - 50 * max(0, qw - pw)) = -0.97, L = -ls(z) = 1.291419. dL/dz = -s(-z) = -s(0.97);
    dz/dpw = 0.1 (1 + 50) = 5.1 -> dL/dpw = -3.698109; dz/dpl = -0.1 -> dL/dpl = 0.072512.
    DPO on the same pair: -ls(0.03) = 0.678260."""
    policy, reference = seq(-11.2, -12.0, grad=True), seq(-11.0, -11.5)
    out = L.DPOP(0.1, lam=50)(policy, reference, batch())
    assert value(out) == pytest.approx(1.291419, abs=TOL)
    out.losses.sum().backward()
    assert float(policy.chosen.grad) == pytest.approx(-3.698109, abs=TOL)
    assert float(policy.rejected.grad) == pytest.approx(0.072512, abs=TOL)
    assert float(out.metrics["dpop/penalty"]) == pytest.approx(0.2, abs=TOL)
    assert value(L.DPO(0.1)(seq(-11.2, -12.0), reference, batch())) == pytest.approx(0.678260, abs=TOL)


def test_dpop_equals_dpo_when_chosen_above_reference():
    """Common example has pw -10 >= qw -11, so the penalty is 0 and DPOP = DPO = 0.620957."""
    out, _ = common(L.DPOP(0.1, lam=50))
    assert value(out) == pytest.approx(0.620957, abs=TOL)


def test_minor_dpo_gradients():
    """Common example: rl -0.5 < 0, so the rejected side gets no gradient (dL/dpl = 0).
    With rl +0.3 (pl = ql + 0.3 = -11.2; rw 1.0): L = -ls(0.1 - 0.03) = -ls(0.07) = 0.658760, and
    dL/dpl = s(-0.07) * 0.1 = 0.048251."""
    out, policy = common(L.MinorDPO(0.1), grad=True)
    out.losses.sum().backward()
    assert float(policy.rejected.grad) == 0.0
    policy = seq(-10.0, -11.2, grad=True)
    out = L.MinorDPO(0.1)(policy, seq(-11.0, -11.5), batch())
    assert value(out) == pytest.approx(0.658760, abs=TOL)
    out.losses.sum().backward()
    assert float(policy.rejected.grad) == pytest.approx(0.048251, abs=TOL)


def test_orpo():
    """ORPO (Hong et al. 2024, arXiv 2403.07691), worked by hand: pw_bar -2, pl_bar -3 (the common example's -10/5, -12/4), lam 0.1 -> 2.028875:
    NLL 2, log_odds = 1 - (log(1 - e^-2) - log(1 - e^-3)) = 0.904847, L = 2 - 0.1 ls(0.904847)."""
    out, _ = common(L.ORPO(lam=0.1))
    assert value(out) == pytest.approx(2.028875, abs=TOL)


def test_odpo():
    """ODPO (Amini et al. 2024, arXiv 2402.10571), worked by hand: scores 8, 5 -> offset log 3, L = -ls(0.15 - 1.098612) = 1.275956."""
    out, _ = common(L.ODPO(0.1, alpha=1.0), scores=(8.0, 5.0))
    assert value(out) == pytest.approx(1.275956, abs=TOL)
    assert float(out.metrics["odpo/offset"]) == pytest.approx(math.log(3), abs=TOL)


def test_odpo_needs_scores_with_a_positive_gap():
    with pytest.raises(ValueError, match="scores"):
        common(L.ODPO(0.1))
    with pytest.raises(ValueError, match="row 0"):
        common(L.ODPO(0.1), scores=(5.0, 5.0))


def test_exo_pair():
    """Derived: z = 0.15, e 1e-3: s(z)(ls(z) - log(0.999)) + s(-z)(ls(-z) - log(0.001))
    = 0.537430 * (-0.620957 + 0.001001) + 0.462570 * (-0.770957 + 6.907755) = 2.505517."""
    out, _ = common(L.EXOPair(0.1, eps=1e-3))
    assert value(out) == pytest.approx(2.505517, abs=TOL)


def test_simpo():
    """Derived: pw_bar -2, pl_bar -3, beta 2, gamma 1 -> -ls(2 * 1 - 1) = -ls(1) = 0.313262."""
    out, _ = common(L.SimPO(beta=2.0, gamma=1.0))
    assert not L.SimPO.requires_reference
    assert value(out) == pytest.approx(0.313262, abs=TOL)
    assert float(out.metrics["rewards/margins"]) == pytest.approx(2.0)


def test_cpo():
    """Derived: -ls(0.1 (pw - pl)) + 1 * NLL = -ls(0.2) + 10/5 = 0.598139 + 2 = 2.598139."""
    out, _ = common(L.CPO(beta=0.1, alpha=1.0))
    assert value(out) == pytest.approx(2.598139, abs=TOL)


def test_sft_and_rpo():
    """SFT: token-mean NLL of the chosen, 10/5 = 2. RPO = DPO + 1 * NLL = 0.620957 + 2; each term's
    value is logged under its own name and the DPO rewards are also exposed unprefixed."""
    out, _ = common(L.SFT())
    assert value(out) == pytest.approx(2.0)
    rpo = L.WeightedLoss([L.DPO(0.1), L.SFT()], [1.0, 1.0])
    out, _ = common(rpo)
    assert value(out) == pytest.approx(2.620957, abs=TOL)
    assert float(out.metrics["dpo/loss"]) == pytest.approx(0.620957, abs=TOL)
    assert float(out.metrics["sft/loss"]) == pytest.approx(2.0)
    assert float(out.metrics["rewards/margins"]) == pytest.approx(0.15)
    assert rpo.requires_reference


def test_posterior_reference_free():
    """Posterior objective: q = 0, so with beta 0.1 L = -ls(0.1 (-10 + 12)) = -ls(0.2) = 0.598139;
    no reference is needed, and the default beta is the study's 100."""
    loss = L.PosteriorDPO(beta=0.1)
    assert not loss.requires_reference and L.PosteriorDPO().beta == 100.0
    out = loss(seq(-10.0, -12.0), None, batch())
    assert value(out) == pytest.approx(0.598139, abs=TOL)


def test_likelihood_is_dpo_with_its_reference():
    """The likelihood objective is DPO's formula on an unconditional reference: same number."""
    loss = L.LikelihoodDPO(0.1)
    assert loss.requires_unconditional_reference
    out, _ = common(loss)
    assert value(out) == pytest.approx(0.620957, abs=TOL)


def test_aot_paired_and_unpaired():
    """Derived, two pairs, beta 1, no smoothing.
    Policy (pw, pl): (-1, -3), (-2, -1); reference: (-2, -2), (-1, -4).
    Paired: policy margins {2, -1} sorted [-1, 2]; reference margins {0, 3} sorted [0, 3];
    d = [-1, -1] -> L = -ls(-1) = 1.313262 each.
    Unpaired: rw = {1, -1} sorted [-1, 1]; rl = {-1, 3} sorted [-1, 3]; d = [0, -2]
    -> L = [-ls(0), -ls(-2)] = [0.693147, 2.126928]."""
    policy = SequenceLogps(torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0]), torch.tensor([2, 2]), torch.tensor([2, 2]))
    reference = SequenceLogps(torch.tensor([-2.0, -1.0]), torch.tensor([-2.0, -4.0]), torch.tensor([2, 2]), torch.tensor([2, 2]))
    paired = L.AOTPaired(beta=1.0)(policy, reference, batch(2))
    assert paired.losses.tolist() == pytest.approx([1.313262, 1.313262], abs=TOL)
    unpaired = L.AOTUnpaired(beta=1.0)(policy, reference, batch(2))
    assert unpaired.losses.tolist() == pytest.approx([0.693147, 2.126928], abs=TOL)


@pytest.mark.parametrize(
    "divergence, expected",
    [
        (L.ReverseKL(), 0.620957),  # plain DPO
        (L.ForwardKL(), 0.631154),  # scores -e^-1 + e^0.5 = 1.280842; -ls(0.1280842)
        (L.JensenShannon(), 0.660652),  # ls(1) - ls(-0.5) = 0.660815; -ls(0.0660815)
        (L.AlphaDivergence(0.5), 0.627691),  # -2 e^-0.5 + 2 e^0.25 = 1.354990; -ls(0.1354990)
    ],
    ids=lambda x: x if isinstance(x, float) else type(x).__name__,
)
def test_f_divergence_scores(divergence, expected):
    """f-DPO: DPO on score differences f'(u) of the common example's rw 1.0, rl -0.5 (derivations inline)."""
    out, _ = common(L.DPO(0.1, divergence=divergence))
    assert value(out) == pytest.approx(expected, abs=TOL)


def test_alpha_divergence_limits():
    """a -> 1 approaches reverse KL's score difference D; a = 0 is exactly forward KL."""
    r = torch.tensor([1.0, -0.5], dtype=torch.float64)
    near = L.AlphaDivergence(1 - 1e-6)(r)
    assert float(near[0] - near[1]) == pytest.approx(1.5, abs=1e-5)
    assert torch.allclose(L.AlphaDivergence(0.0)(r), L.ForwardKL()(r))


def test_likelihood_dpo_default_beta_is_the_studys_best():
    """Liu et al. 2024 (arXiv 2407.13709): the likelihood objective did best at beta 0.01."""
    assert L.LikelihoodDPO().beta == 0.01 and L.PosteriorDPO().beta == 100.0
