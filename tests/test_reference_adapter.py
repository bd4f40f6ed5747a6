"""Adapter-disabled references for LoRA policies (LoraSource from YAML-level settings)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers_reference import assert_same_run, data, fit, module, run_with_resume, tiny_source
from lit_align.batch import LogpsRequest
from lit_align.data.collate import PairCollator
from lit_align.logprobs import sequence_logps
from lit_align.losses import DPO
from lit_align.peft_config import LoraSource
from lit_align.reference import AdapterDisabledReference


def lora(**kwargs) -> LoraSource:
    return LoraSource(tiny_source(), r=4, alpha=8, **kwargs)


def saved_adapter(directory) -> str:
    """A LoRA adapter whose B matrices are non-zero (a fresh one equals the base model)."""
    model = lora().load_model()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    model.save_pretrained(directory)
    return str(directory)


def batch_of(dm, n: int = 4):
    return PairCollator(257, 8)(dm.train_set.pairs[:n])


def test_reference_of_a_fresh_adapter_is_the_base_model_bit_for_bit(tmp_path):
    """After 2 steps the LoRA weights moved (policy != base), yet the reference equals a separately
    built base TinyModel exactly: adapters off leaves only the base layers."""
    dm = data(tmp_path)
    strategy = AdapterDisabledReference()
    m, _ = fit(tmp_path, strategy, steps=2, dm=dm, source=lora())
    assert not list(m.reference.parameters()) and not m.reference.reference_models()  # no second copy
    batch = batch_of(dm)
    ref = strategy.logps(m.policy, batch, LogpsRequest())
    base = sequence_logps(tiny_source().load_model().eval(), batch)
    assert torch.equal(ref.chosen, base.chosen) and torch.equal(ref.rejected, base.rejected)
    with torch.no_grad():
        policy = sequence_logps(m.policy, batch)
    assert not torch.allclose(policy.chosen, base.chosen)
    assert m.policy.training  # the reference pass restored train mode


def test_continued_adapter_reference_is_that_adapter_frozen(tmp_path):
    """With adapter_path, the reference equals base + the adapter as loaded (not the bare base), and the
    reference pass leaves the trained adapter weights untouched."""
    from peft import PeftModel

    path = saved_adapter(tmp_path / "adapter")
    dm = data(tmp_path)
    strategy = AdapterDisabledReference()
    m, _ = fit(tmp_path, strategy, steps=2, dm=dm, source=lora(adapter_path=path))
    assert strategy.initial is not None and all("lora_" in n for n in strategy.initial)
    batch = batch_of(dm)
    before = {n: p.detach().clone() for n, p in m.policy.named_parameters()}
    ref = strategy.logps(m.policy, batch, LogpsRequest())
    after = dict(m.policy.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)
    loaded = PeftModel.from_pretrained(tiny_source().load_model(), path).eval()
    expected = sequence_logps(loaded, batch)
    torch.testing.assert_close(ref.chosen, expected.chosen, rtol=0, atol=1e-6)
    base = sequence_logps(tiny_source().load_model().eval(), batch)
    assert not torch.allclose(ref.chosen, base.chosen, atol=1e-3)


def test_a_policy_without_adapters_is_refused_with_what_to_change():
    m = module(AdapterDisabledReference())
    with pytest.raises(ValueError, match="LoraSource"):
        m.configure_model()


@pytest.mark.parametrize("continued", [False, True])
def test_lora_resume_is_bit_identical(tmp_path, continued):
    path = saved_adapter(tmp_path / "adapter") if continued else None
    runs = run_with_resume(tmp_path, lambda tmp: AdapterDisabledReference(), DPO, make_source=lambda: lora(adapter_path=path))
    assert_same_run(*runs)
