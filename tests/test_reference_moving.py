"""TR-DPO moving references: EMA closed form, hard sync schedule, accumulation, fp32 master weights."""

from __future__ import annotations

import math
import pytest
import torch
from torch import nn

from tests.helpers_reference import fit
from lit_align.logprobs import unwrap_causal_lm
from lit_align.reference import EMAReference, MovingReference, SyncReference
from lit_align.reference.moving import move_towards


class Vec(nn.Module):
    def __init__(self, values, dtype=torch.float32) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(values, dtype=dtype))


def with_model(strategy: MovingReference, ref: nn.Module) -> MovingReference:
    """The strategy holding ``ref`` as its reference model, as configure would leave it."""
    strategy.model = ref
    return strategy


def test_single_update_matches_the_worked_example():
    """ref [1, -2], policy [1.5, -1], alpha 0.6: 0.6*1.5 + 0.4*1 = 1.3; 0.6*(-1) + 0.4*(-2) = -1.4."""
    strategy = with_model(MovingReference(alpha=0.6, tau=1), Vec([1.0, -2.0]))
    policy = Vec([1.5, -1.0])
    strategy.after_optimizer_step(policy, 1)
    torch.testing.assert_close(strategy.model.w.data, torch.tensor([1.3, -1.4]), rtol=0, atol=1e-6)
    # drift before = sqrt(0.5^2 + 1^2); after = (1 - alpha) * drift
    assert strategy.drift == pytest.approx(math.sqrt(1.25))
    assert strategy.distance == pytest.approx(0.4 * math.sqrt(1.25))
    assert strategy.metrics()["ref/updates"] == 1.0


def test_ema_closed_form_every_tau_and_never_twice():
    """Constant policy p, n updates: ref_n = p + (1-alpha)^n (ref_0 - p).

    tau 3 over steps 1..10 updates at 3, 6, 9 (n = 3); calling a step twice must not update twice.
    alpha 0.6: (0.4)^3 = 0.064 -> [1.5 - 0.032, -1 - 0.064] = [1.468, -1.064].
    """
    strategy = with_model(MovingReference(alpha=0.6, tau=3), Vec([1.0, -2.0]))
    policy = Vec([1.5, -1.0])
    for step in range(1, 11):
        strategy.after_optimizer_step(policy, step)
        strategy.after_optimizer_step(policy, step)  # a repeated call for the same step is ignored
    assert strategy.updates == 3 and strategy.last_step == 9
    torch.testing.assert_close(strategy.model.w.data, torch.tensor([1.468, -1.064]), rtol=0, atol=1e-6)


def test_ema_closed_form_with_moving_policy():
    """ref_n = (1-a)^n ref_0 + sum_k a (1-a)^(n-k) p_k with policy values p_1..p_3 = 1, 2, 3, a = 0.5:
    0.125*0 + 0.5*0.25*1 + 0.5*0.5*2 + 0.5*3 = 0.125 + 0.5 + 1.5 = 2.125."""
    strategy = with_model(EMAReference(alpha=0.5, tau=1), Vec([0.0]))
    policy = Vec([0.0])
    for step, value in enumerate([1.0, 2.0, 3.0], start=1):
        policy.w.data.fill_(value)
        strategy.after_optimizer_step(policy, step)
    assert strategy.model.w.item() == pytest.approx(2.125, abs=1e-7)


def test_fp32_master_weights_keep_small_updates_that_bf16_loses():
    """bf16 policy 1.0078125 (the next bf16 after 1), reference 1.0, alpha 0.01: the exact update is
    1.000078125, which rounds back to 1.0 in bf16 but is kept in an fp32 reference."""
    bf16_ref = Vec([1.0], torch.bfloat16)
    policy = Vec([1.0078125], torch.bfloat16)
    move_towards([(bf16_ref.w, policy.w)], 0.01)
    assert bf16_ref.w.item() == 1.0  # the pitfall
    fp32_ref = Vec([1.0], torch.float32)
    move_towards([(fp32_ref.w, policy.w)], 0.01)
    assert fp32_ref.w.item() == pytest.approx(1.000078125, abs=1e-7)


def test_validation_of_settings():
    with pytest.raises(ValueError, match="alpha"):
        MovingReference(alpha=0.0)
    with pytest.raises(ValueError, match="tau"):
        MovingReference(tau=0)
    with pytest.raises(ValueError, match="parameter names differ"):
        with_model(MovingReference(tau=1), Vec([1.0])).after_optimizer_step(nn.Linear(1, 1), 1)


class Recording(MovingReference):
    """Records each call and snapshots the policy at each call, to replay the recurrence by hand."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls: list[int] = []
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.initial: dict[str, torch.Tensor] = {}

    def configure(self, policy, context) -> None:
        super().configure(policy, context)
        self.initial = {k: v.detach().clone() for k, v in self.model.named_parameters()}

    def after_optimizer_step(self, policy, step: int) -> None:
        self.calls.append(step)
        if step % self.tau == 0:
            self.snapshots.append({k: v.detach().clone() for k, v in unwrap_causal_lm(policy).named_parameters()})
        super().after_optimizer_step(policy, step)


def test_sync_under_accumulation_fires_at_multiples_of_tau_only(tmp_path):
    """accumulate 2, 5 optimizer steps (10 batches): the hook runs once per optimizer step (1..5),
    the hard sync at steps 2 and 4; at step 4 the reference became the policy of step 4."""
    strategy = Recording(alpha=1.0, tau=2)
    module, trainer = fit(tmp_path, strategy, steps=5, accumulate=2)
    assert trainer.global_step == 5
    assert strategy.calls == [1, 2, 3, 4, 5]
    assert strategy.updates == 2 and strategy.last_step == 4
    ref = dict(strategy.model.named_parameters())
    for name, value in strategy.snapshots[-1].items():
        assert torch.equal(ref[name], value), name
    assert trainer.callback_metrics["train/ref/updates"].item() == 2.0


def test_ema_in_training_equals_the_recurrence_on_recorded_policies(tmp_path):
    """tau 1, alpha 0.3, 4 steps: ref_k = lerp(ref_(k-1), theta_k, 0.3) replayed from the recorded
    policies gives bit-identical weights; the reference differs from the policy (it lags)."""
    strategy = Recording(alpha=0.3, tau=1)
    module, _ = fit(tmp_path, strategy, steps=4)
    assert strategy.updates == 4
    ref = dict(strategy.model.named_parameters())
    for name, start in strategy.initial.items():
        expected = start.clone()
        for snap in strategy.snapshots:
            expected.lerp_(snap[name], 0.3)
        assert torch.equal(ref[name], expected), name
    policy = dict(unwrap_causal_lm(module.policy).named_parameters())
    assert any(not torch.equal(ref[n], policy[n]) for n in ref)


def test_hard_sync_every_step_tracks_the_policy_exactly(tmp_path):
    strategy = SyncReference(tau=1)
    module, _ = fit(tmp_path, strategy, steps=3)
    policy = dict(unwrap_causal_lm(module.policy).named_parameters())
    for name, value in strategy.model.named_parameters():
        assert torch.equal(value, policy[name]), name
    assert strategy.distance == 0.0 and strategy.drift > 0.0
