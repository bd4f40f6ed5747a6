"""epsilon-DPO end to end: the logit mixing inside chunked_logps, the per-pair beta, the baseline update.

A worked example, by hand from epsilon-DPO's definitions (Lee et al. 2025, arXiv 2502.13177) (vocab 3, chosen [0, 2], rejected [1, 2], two completion positions, first
position's logits shared by both rows): policy w [[2,1,0],[0.5,0,1.5]], l [[2,1,0],[1,0.8,0.2]];
reference w [[1.5,1.2,0],[0.3,0,1]], l [[1.5,1.2,0],[0.9,0.5,0.4]]; eps 0.01, beta 0.1 ->
pw -0.871975, pl -3.026531, qw -1.297931, ql -2.297750; z 2.154556, z_minus 2.166078,
z_plus 2.143033 -> s +1, beta_i 0.1 / 1.01 = 0.0990099, D 1.154737, L -ls(0.114330) = 0.637615.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.logprobs import chunked_logps
from lit_align.losses import DPO, EpsilonDPO, WeightedLoss

TOL = 1e-5
POLICY = [[[2, 1, 0], [0.5, 0, 1.5], [0, 0, 0]], [[2, 1, 0], [1, 0.8, 0.2], [0, 0, 0]]]
REFERENCE = [[[1.5, 1.2, 0], [0.3, 0, 1], [0, 0, 0]], [[1.5, 1.2, 0], [0.9, 0.5, 0.4], [0, 0, 0]]]


def identity_head() -> nn.Linear:
    head = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))  # hidden states ARE the logits
    return head


def vocab3_batch() -> PreferenceBatch:
    """Rows: [prompt, 0, 2] (chosen) and [prompt, 1, 2] (rejected); position t predicts token t+1."""
    ids = torch.tensor([[0, 0, 2], [0, 1, 2]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1]])
    return PreferenceBatch(ids, torch.ones_like(ids), mask, torch.tensor([0]))


@pytest.mark.parametrize("chunk_size", [1, 1024])
def test_chunked_logps_mixing_matches_the_worked_example(chunk_size):
    """The mixtures computed inside the chunk loop give the worked example's z, z_minus, z_plus (module docstring)."""
    head, batch = identity_head(), vocab3_batch()
    hidden = torch.tensor(POLICY, requires_grad=True)
    ref_hidden = torch.tensor(REFERENCE)
    policy = chunked_logps(hidden, head, batch, LogpsRequest(mix_eps=0.01), chunk_size, mix_hidden=ref_hidden, mix_head=head)
    reference = chunked_logps(ref_hidden, head, batch, LogpsRequest(), chunk_size)
    assert float(policy.chosen.detach()) == pytest.approx(-0.871975, abs=TOL)
    assert float(policy.rejected.detach()) == pytest.approx(-3.026531, abs=TOL)
    assert float(reference.chosen.detach()) == pytest.approx(-1.297931, abs=TOL)
    assert float(reference.rejected.detach()) == pytest.approx(-2.297750, abs=TOL)
    assert float(policy.mixed_minus[0] - policy.mixed_minus[1]) == pytest.approx(2.166078, abs=TOL)
    assert float(policy.mixed_plus[0] - policy.mixed_plus[1]) == pytest.approx(2.143033, abs=TOL)

    loss = EpsilonDPO(beta=0.1, eps=0.01)
    out = loss(policy, reference, batch)
    assert float(EpsilonDPO.steps(policy)) == 1.0
    assert float(out.metrics["beta/mean_pair"]) == pytest.approx(0.0990099, abs=1e-7)
    assert float(out.losses.detach()) == pytest.approx(0.637615, abs=TOL)
    # the mixes carry no gradient; the loss does (through the policy's hidden states)
    assert not policy.mixed_minus.requires_grad
    out.losses.sum().backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
    # reward metrics use beta_i: 0.0990099 * (pw - qw) = 0.0990099 * 0.425956
    assert float(out.metrics["rewards/chosen"]) == pytest.approx(0.1 / 1.01 * 0.425956, abs=TOL)


def mixed(s: list[int]) -> SequenceLogps:
    """Hand-built log-probs giving the requested steps: z = 0 per pair, mixes at +/- 1 around it."""
    n = len(s)
    st = torch.tensor(s, dtype=torch.float64)
    zeros = torch.zeros(n, dtype=torch.float64)
    # z_minus - z = s, z_plus - z = -s  (s = 0 -> all equal -> no step)
    return SequenceLogps(
        zeros.clone(), zeros.clone(), torch.ones(n), torch.ones(n),
        mixed_minus=torch.cat([st, zeros]), mixed_plus=torch.cat([-st, zeros]),
    )


def run_forward(loss: EpsilonDPO, s: list[int], grad: bool = True) -> None:
    policy = mixed(s)
    with torch.set_grad_enabled(grad):
        out = loss(policy, policy, PreferenceBatch(*(torch.zeros(2 * len(s), 1, dtype=torch.long),) * 3, torch.arange(len(s))))
    assert out.metrics["eps/step_mean"] == pytest.approx(sum(s) / len(s))


def test_baseline_update_over_the_accumulation_window():
    """epsilon-DPO's baseline update (arXiv 2502.13177): s = [1, 1, 0, -1], beta 0.1, eps 0.01 -> 0.1 / (1 + 0.01 * 0.25) = 0.0997506.
    Split over two micro-batches of an accumulation window, updated once after the optimizer step;
    a validation forward (no grad) in between does not count; a second call without forwards is a no-op."""
    loss = EpsilonDPO(beta=0.1, eps=0.01)
    run_forward(loss, [1, 1])
    run_forward(loss, [1, 1, 1], grad=False)  # validation: ignored
    run_forward(loss, [0, -1])
    assert float(loss.baseline_beta) == 0.1  # not before the optimizer step
    loss.after_optimizer_step()
    assert float(loss.baseline_beta) == pytest.approx(0.0997506, abs=1e-7)
    loss.after_optimizer_step()
    assert float(loss.baseline_beta) == pytest.approx(0.0997506, abs=1e-7)


def test_baseline_is_checkpointed_and_survives_casts():
    """The baseline is a float64 buffer: in state_dict, restored by load_state_dict, kept by .to(bf16)."""
    loss = EpsilonDPO(beta=0.1, eps=0.01)
    run_forward(loss, [1, 1, 0, -1])
    loss.after_optimizer_step()
    state = loss.state_dict()
    assert set(state) == {"baseline_beta"} and state["baseline_beta"].dtype == torch.float64
    fresh = EpsilonDPO(beta=0.1, eps=0.01)
    fresh.load_state_dict(state)
    assert float(fresh.baseline_beta) == float(loss.baseline_beta)
    fresh.to(torch.bfloat16)
    assert fresh.baseline_beta.dtype == torch.float64
    assert float(fresh.baseline_beta) == 0.1 / 1.0025  # exact: no bf16 rounding
    inside = WeightedLoss([fresh])
    assert "terms.0.baseline_beta" in inside.state_dict()


def test_request_and_reference_requirements():
    """epsilon-DPO asks the log-prob pass for the mixes, needs reference logits, and two different eps cannot be combined."""
    loss = EpsilonDPO(eps=0.02)
    assert loss.logps_request.mix_eps == 0.02 and loss.requires_reference_logits and loss.requires_reference
    assert WeightedLoss([loss, DPO()]).requires_reference_logits
    with pytest.raises(ValueError, match="different epsilon"):
        WeightedLoss([EpsilonDPO(eps=0.01), EpsilonDPO(eps=0.02)]).logps_request
    with pytest.raises(ValueError, match="mixed log-probs"):
        loss(SequenceLogps(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.ones(1)), None, vocab3_batch())


def _rank(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        loss = EpsilonDPO(beta=0.1, eps=0.01)
        run_forward(loss, [[1, 1, 1], [0, -1]][rank])  # rank 0: three pairs, rank 1: two pairs
        loss.after_optimizer_step()
        results[rank] = float(loss.baseline_beta)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_baseline_update_averages_over_ranks():
    """Two gloo ranks with s = [1, 1, 1] and [0, -1]: mean over all five pairs 0.4, on both ranks
    beta = 0.1 / 1.004 = 0.0996016 (a per-rank mean would give 0.0990099 and 0.1005025)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.start_processes(_rank, args=(2, port, results), nprocs=2, join=True, start_method="spawn")
    assert results[0] == pytest.approx(0.1 / 1.004, abs=1e-9)
    assert results[1] == results[0]


# z, z_minus, z_plus per pair -> s: +1 when the beta/(1+eps) mix raises the margin and beta/(1-eps) lowers
# it (z_minus > z > z_plus), -1 the other way round, 0 otherwise: ties and both-on-one-side (arXiv 2502.13177)
STEP_CASES = [((0.0, 1.0, -1.0), 1), ((0.0, -1.0, 1.0), -1), ((0.0, 1.0, 0.0), 0), ((0.0, 0.0, -1.0), 0),
              ((0.0, -1.0, 0.0), 0), ((0.0, 0.0, 1.0), 0), ((0.0, 1.0, 2.0), 0), ((0.0, -2.0, -1.0), 0),
              ((2.0, 3.5, 1.0), 1), ((-1.0, -3.0, 0.5), -1)]


def test_steps_follow_the_definition_on_asymmetric_values_and_ties():
    """Chosen and rejected halves carry distinct values (so a sign slip between the halves of a mix
    shows), the mixes are not symmetric around z, and ties give no step."""
    n = len(STEP_CASES)
    chosen = torch.linspace(-5.0, -2.0, n, dtype=torch.float64)
    rejected = chosen - torch.tensor([z for (z, _, _), _ in STEP_CASES], dtype=torch.float64)
    offset_minus, offset_plus = torch.linspace(-7.0, -4.0, n, dtype=torch.float64), torch.linspace(-9.0, -6.0, n, dtype=torch.float64)
    z_minus = torch.tensor([m for (_, m, _), _ in STEP_CASES], dtype=torch.float64)
    z_plus = torch.tensor([p for (_, _, p), _ in STEP_CASES], dtype=torch.float64)
    policy = SequenceLogps(chosen, rejected, torch.ones(n), torch.ones(n),
                           mixed_minus=torch.cat([offset_minus + z_minus, offset_minus]),
                           mixed_plus=torch.cat([offset_plus + z_plus, offset_plus]))
    assert EpsilonDPO.steps(policy).tolist() == [float(s) for _, s in STEP_CASES]


def test_per_pair_beta_and_metrics_follow_the_steps():
    """beta_i = beta / (1 + eps * s_i): s = +1, -1, 0 with beta 0.1, eps 0.2 -> 0.1/1.2, 0.1/0.8, 0.1; the
    loss is -log sigmoid(beta_i * (rw - rl)) and the metrics report the per-pair betas."""
    policy = mixed([1, -1, 0])
    policy.chosen = torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64)
    policy.rejected = torch.tensor([-2.0, -2.5, -1.0], dtype=torch.float64)
    policy.mixed_minus = policy.mixed_minus + torch.cat([policy.chosen - policy.rejected, torch.zeros(3, dtype=torch.float64)])
    policy.mixed_plus = policy.mixed_plus + torch.cat([policy.chosen - policy.rejected, torch.zeros(3, dtype=torch.float64)])
    reference = SequenceLogps(torch.full((3,), -1.5, dtype=torch.float64), torch.full((3,), -1.5, dtype=torch.float64), torch.ones(3), torch.ones(3))
    loss = EpsilonDPO(beta=0.1, eps=0.2)
    out = loss(policy, reference, PreferenceBatch(*(torch.zeros(6, 1, dtype=torch.long),) * 3, torch.arange(3)))
    betas = [0.1 / 1.2, 0.1 / 0.8, 0.1]
    margins = [1.0, 0.5, -2.0]  # (pw - qw) - (pl - ql) = pw - pl
    expected = [math.log1p(math.exp(-b * m)) for b, m in zip(betas, margins)]
    torch.testing.assert_close(out.losses, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert out.losses.dtype == torch.float64
    assert float(out.metrics["beta/min_pair"]) == pytest.approx(min(betas)) and float(out.metrics["beta/max_pair"]) == pytest.approx(max(betas))
    assert float(out.metrics["beta/mean_pair"]) == pytest.approx(sum(betas) / 3)
    assert float(out.metrics["beta/baseline"]) == pytest.approx(0.1) and float(out.metrics["eps/step_mean"]) == 0.0
    with pytest.raises(ValueError, match=r"^EpsilonDPO needs the epsilon-mixed log-probs"):
        EpsilonDPO.steps(SequenceLogps(policy.chosen, policy.rejected, torch.ones(3), torch.ones(3), mixed_minus=policy.mixed_minus))
