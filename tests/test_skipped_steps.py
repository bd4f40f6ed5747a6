"""A skipped optimizer step must not move any reference or loss state.

Under fp16 mixed precision the GradScaler skips ``optimizer.step`` when a gradient is non-finite;
Lightning still counts the step. The policy then has not moved, so TR-DPO's update must not fire
(it would pull the reference towards an unchanged policy, and count an update) and epsilon-DPO's
baseline beta must not be divided again. Gradients are made infinite at chosen steps by a hook.
"""

from __future__ import annotations

import copy

import lightning as L
import torch
from lightning.pytorch.plugins import MixedPrecision

from lit_align.losses import EpsilonDPO
from lit_align.reference import FrozenReference, MovingReference
from tests.helpers_reference import fit

SKIPPED = {1, 3}  # optimizer steps (0-based) whose gradients are made infinite


class Snapshots(L.Callback):
    """Reference weights, strategy state and loss buffers after each optimizer step; poisons chosen steps."""

    def __init__(self) -> None:
        self.after: list[dict] = []
        self.handle = None

    def on_train_start(self, trainer, module) -> None:
        param = next(p for p in module.policy.parameters() if p.requires_grad)
        poison = lambda grad: grad * float("inf") if trainer.global_step in SKIPPED else grad  # noqa: E731
        self.handle = param.register_hook(poison)
        self.policy_before = copy.deepcopy(module.policy.state_dict())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.after.append({
            "references": copy.deepcopy(module.reference.model.state_dict()),
            "strategy": copy.deepcopy(module.reference.state_dict()),  # its models and counters
            "loss": copy.deepcopy(module.loss.state_dict()),
            "policy": copy.deepcopy(module.policy.state_dict()),
            "scale": trainer.precision_plugin.scaler.get_scale(),
        })


def _fit(tmp_path, reference, loss=None):
    snaps = Snapshots()
    # Lightning turns precision="16-mixed" on CPU into bf16 (no scaler); the plugin itself keeps fp16's GradScaler
    fp16 = MixedPrecision("16-mixed", "cpu")
    m, t = fit(tmp_path, reference, steps=5, loss=loss, plugins=[fp16], callbacks=[snaps])
    return m, t, snaps.after


def _equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_scaler_really_skips_the_poisoned_steps(tmp_path):
    """The fixture works: at a poisoned step the policy is unchanged and the scale halves."""
    _, t, after = _fit(tmp_path, FrozenReference())
    assert t.global_step == 5
    for step in SKIPPED:
        assert _equal(after[step]["policy"], after[step - 1]["policy"])
        assert after[step]["scale"] == after[step - 1]["scale"] / 2
    assert not _equal(after[2]["policy"], after[1]["policy"])


def test_trdpo_update_does_not_fire_on_a_skipped_step(tmp_path):
    """alpha 0.5, tau 1: an update every applied step; 5 steps with 2 skipped give 3 updates.

    At a skipped step the reference must equal the previous step's (an update there would pull it
    half-way towards the unchanged policy, which after step 0's update it differs from).
    """
    m, _, after = _fit(tmp_path, MovingReference(alpha=0.5, tau=1))
    assert m.reference.updates == 5 - len(SKIPPED)
    for step in SKIPPED:
        assert _equal(after[step]["references"], after[step - 1]["references"])
    assert not _equal(after[2]["references"], after[1]["references"])
    assert [int(a["strategy"]["updates"]) for a in after] == [1, 1, 2, 2, 3]


def test_epsilon_dpo_baseline_does_not_update_on_a_skipped_step(tmp_path):
    """beta is divided by (1 + eps * mean s) after applied steps only; a skipped step's s is dropped.

    At step 0 the policy is the reference, so s = 0 and beta stays 0.1; applied steps 2 and 4 move it.
    """
    m, _, after = _fit(tmp_path, FrozenReference(), loss=EpsilonDPO(beta=0.1, eps=0.5))
    betas = [float(a["loss"]["baseline_beta"]) for a in after]
    for step in SKIPPED:
        assert betas[step] == betas[step - 1]
    assert betas[0] == 0.1 and betas[2] != betas[1] and betas[4] != betas[3]
