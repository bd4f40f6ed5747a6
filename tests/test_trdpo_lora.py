"""TR-DPO with a LoRA policy, end to end: the moving reference is a copy of the LoRA network whose
adapter follows ``ref <- alpha * policy + (1 - alpha) * ref`` every tau steps, while its (frozen)
base weights stay the base model's; resume is bit-exact."""

from __future__ import annotations

import copy

import lightning as L
import torch

from lit_align.peft_config import LoraSource
from lit_align.reference import MovingReference
from tests.helpers_reference import assert_same_run, fit, run_with_resume, tiny_source


def lora() -> LoraSource:
    return LoraSource(tiny_source(), r=4, alpha=8)


class PolicyStates(L.Callback):
    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_start(self, trainer, module) -> None:
        self.states.append(self._lora(module))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.states.append(self._lora(module))

    @staticmethod
    def _lora(module) -> dict[str, torch.Tensor]:
        base = module.policy.get_base_model()
        return {k: v.detach().clone() for k, v in base.named_parameters() if "lora_" in k}


def test_lora_adapter_of_the_reference_follows_the_trdpo_recurrence(tmp_path):
    """alpha 0.5, tau 2, 5 steps: updates after steps 2 and 4, each from the policy at that step."""
    recorder = PolicyStates()
    m, _ = fit(tmp_path, MovingReference(alpha=0.5, tau=2), steps=5, source=lora(), callbacks=[recorder])
    states = recorder.states  # [initial, after step 1, ..., after step 5]
    expected = copy.deepcopy(states[0])  # the reference starts as the policy (fresh adapter: B = 0)
    for step in (2, 4):
        expected = {k: v.lerp(states[step][k], 0.5) for k, v in expected.items()}
    reference = dict(m.reference.model.named_parameters())
    assert m.reference.updates == 2
    for name, value in expected.items():
        torch.testing.assert_close(reference[name], value, rtol=0, atol=1e-7)
    assert any(not torch.equal(states[5][k], reference[k]) for k in expected)  # the policy moved on after step 4
    assert any(bool(reference[k].abs().sum() > 0) for k in expected if "lora_B" in k)  # the adapter was copied in
    base = dict(tiny_source().load_model().named_parameters())
    for name, value in reference.items():  # frozen base weights: exactly the base model's
        if "lora_" not in name:
            plain = name.replace(".base_layer", "")
            assert torch.equal(value, base[plain]), name


def test_trdpo_lora_resume_is_bit_identical(tmp_path):
    full, t_full, resumed, t_res = run_with_resume(
        tmp_path, lambda tmp: MovingReference(alpha=0.5, tau=2), lambda: None, make_source=lora)
    assert_same_run(full, t_full, resumed, t_res)
    assert resumed.reference.updates == full.reference.updates > 0
