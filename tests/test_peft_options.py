"""LoraSource's PEFT options (DoRA, rsLoRA, modules_to_save, all-linear) reach PEFT and change the model;
QLoRA is refused in one line where the platform cannot run it (this CPU machine)."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from lit_align.errors import ConfigError
from lit_align.models import TinyModel
from lit_align.peft_config import LoraSource, qlora_unsupported_reason
from tests.conftest import REPO

BASE = dict(hidden_size=32, num_layers=2, num_heads=2, seed=0)


def lora(**kwargs) -> LoraSource:
    base = kwargs.pop("base", None) or TinyModel(**BASE)
    return LoraSource(base, **{"r": 4, "alpha": 16, **kwargs})


def adapted_layers(model) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def test_dora_reaches_the_config_and_adds_a_magnitude_per_adapted_layer():
    plain, dora = lora().load_model(), lora(use_dora=True).load_model()
    assert dora.peft_config["default"].use_dora and not plain.peft_config["default"].use_dora
    magnitudes = {n: p for n, p in dora.named_parameters() if "lora_magnitude_vector" in n}
    assert not any("lora_magnitude_vector" in n for n, _ in plain.named_parameters())
    # one trainable magnitude vector per adapted linear layer, of its output width, initialised to the column norms
    assert len(magnitudes) == len(adapted_layers(dora)) > 0
    assert all(p.requires_grad for p in magnitudes.values())
    layer = adapted_layers(dora)["base_model.model.model.layers.0.self_attn.q_proj"]
    weight = layer.base_layer.weight
    assert torch.allclose(layer.lora_magnitude_vector["default"].weight, weight.norm(dim=1), atol=1e-6)


def test_rslora_scales_the_update_by_alpha_over_sqrt_r():
    for rs, expected in ((False, 16 / 4), (True, 16 / math.sqrt(4))):
        model = lora(use_rslora=rs).load_model()
        assert model.peft_config["default"].use_rslora is rs
        scalings = {m.scaling["default"] for m in adapted_layers(model).values()}
        assert len(scalings) == 1 and scalings.pop() == pytest.approx(expected), (rs, scalings)


def test_all_linear_adapts_every_linear_layer_but_the_head():
    base = TinyModel(**BASE, tie_word_embeddings=False).load_model()
    expected = {f"base_model.model.{n}" for n, m in base.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}
    model = lora(base=TinyModel(**BASE, tie_word_embeddings=False), target_modules="all-linear").load_model()
    assert set(adapted_layers(model)) == expected and len(expected) == 2 * 7  # q k v o gate up down per layer
    only_q = lora(target_modules=["q_proj"]).load_model()
    assert {n.rsplit(".", 1)[-1] for n in adapted_layers(only_q)} == {"q_proj"}


def test_modules_to_save_are_trained_in_full_and_the_reference_keeps_the_originals(tmp_path):
    from tests.helpers_reference import data, fit

    from lit_align.reference import AdapterDisabledReference

    source = lora(base=TinyModel(**BASE, tie_word_embeddings=False), modules_to_save=["lm_head"])
    model = source.load_model()
    assert model.peft_config["default"].modules_to_save == ["lm_head"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("base_model.model.lm_head.modules_to_save") for n in trainable)
    assert not lora(base=TinyModel(**BASE, tie_word_embeddings=False)).load_model().base_model.model.lm_head.weight.requires_grad

    start = TinyModel(**BASE, tie_word_embeddings=False).load_model().lm_head.weight.detach().clone()
    m, _ = fit(tmp_path, AdapterDisabledReference(), steps=2, dm=data(tmp_path), source=source)
    head = m.policy.base_model.model.lm_head
    assert not torch.equal(head.modules_to_save["default"].weight, start)  # trained
    assert torch.equal(head.original_module.weight, start)  # what the adapter-disabled reference runs
    saved = tmp_path / "adapter"
    m.policy.save_pretrained(saved)
    from safetensors.torch import load_file

    assert any("lm_head" in k for k in load_file(saved / "adapter_model.safetensors"))


def test_new_options_change_the_identity_and_old_identities_stay():
    plain = lora().identity()
    assert "use_dora" not in plain  # an earlier run's reference cache key is unchanged
    keys = {lora(use_dora=True).identity(), lora(use_rslora=True).identity(), lora(modules_to_save=["lm_head"]).identity(), plain}
    assert len(keys) == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_qlora_is_refused_in_one_line_without_cuda(tmp_path, sort_task):
    from lit_align.models import save_tiny

    assert "CUDA" in qlora_unsupported_reason()
    base_dir = save_tiny(tmp_path / "base", **BASE)
    from lit_align.models import PretrainedModel

    with pytest.raises(ConfigError, match=r"QLoRA\) is not available here: it needs a CUDA GPU"):
        lora(base=PretrainedModel(str(base_dir)), quantization="4bit").load_model()
    with pytest.raises(ConfigError, match="loaded from pretrained weights"):
        lora(quantization="4bit")
    # through the command line: one error line, exit 1, before any training
    config = tmp_path / "fit.yaml"
    config.write_text(f"""
model:
  model:
    class_path: lit_align.peft_config.LoraSource
    init_args:
      base: {{class_path: lit_align.models.PretrainedModel, init_args: {{path: {base_dir}}}}}
      quantization: 4bit
  reference: {{class_path: lit_align.reference.AdapterDisabledReference}}
data: {{class_path: lit_align.data.PreferenceDataModule, init_args: {{train_path: {sort_task['train']}}}}}
trainer:
  max_steps: 1
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {tmp_path}, name: run}}}}
""")
    result = subprocess.run([sys.executable, "cli.py", "fit", "--config", str(config)], cwd=REPO, capture_output=True, text=True)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr[-2000:]
    assert lines[-1].startswith("error:") and "needs a CUDA GPU" in lines[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_qlora_without_bitsandbytes_names_the_package(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    assert "bitsandbytes" in qlora_unsupported_reason()


@pytest.mark.skipif(qlora_unsupported_reason() is not None, reason=f"QLoRA: {qlora_unsupported_reason()}")
def test_qlora_loads_a_4bit_base_with_trainable_adapters(tmp_path):
    """Where CUDA and bitsandbytes exist: the base's linear layers are 4-bit, only the adapters train, and a
    forward / backward runs. (Not run on the CPU machines the suite usually runs on.)"""
    import bitsandbytes as bnb

    from lit_align.models import PretrainedModel, save_tiny

    base_dir = save_tiny(tmp_path / "base", **BASE)
    model = lora(base=PretrainedModel(str(base_dir), dtype="bfloat16"), quantization="4bit").load_model()
    layers = adapted_layers(model)
    assert layers and all(isinstance(m.base_layer, bnb.nn.Linear4bit) for m in layers.values())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.randint(0, 250, (2, 8), device="cuda")
    model.to("cuda")(ids).logits.float().sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_B" in n)


BAD_SETTINGS = {  # each used to reach PEFT, which took it without a word or with a traceback
    "alpha 0": ({"alpha": 0}, "LoraSource alpha must be a number > 0, got 0"),
    "alpha negative": ({"alpha": -16}, "LoraSource alpha must be a number > 0, got -16"),
    "alpha nan": ({"alpha": math.nan}, "LoraSource: alpha must be a finite number, got nan"),
    "alpha inf": ({"alpha": math.inf}, "LoraSource: alpha must be a finite number, got inf"),
    "dropout 1": ({"dropout": 1.0}, "LoraSource dropout must be a number >= 0 and < 1, got 1.0"),
    "dropout negative": ({"dropout": -0.1}, "LoraSource dropout must be a number >= 0 and < 1, got -0.1"),
    "dropout nan": ({"dropout": math.nan}, "LoraSource: dropout must be a finite number, got nan"),
    "target unknown": ({"target_modules": ["nope"]}, "LoraSource target_modules ['nope']: Target modules"),
    "target one unknown": ({"target_modules": ["q_proj", "nope"]}, "LoraSource target_modules ['nope']: no module"),
    "target typo": ({"target_modules": ["q_proj", "v_prj"]}, "LoraSource target_modules ['v_prj']: no module"),
    "target empty list": ({"target_modules": []}, "LoraSource target_modules []: "),
    "target empty string": ({"target_modules": ""}, "LoraSource target_modules '': "),
    "modules_to_save unknown": ({"modules_to_save": ["lm_head", "nope"]}, "LoraSource modules_to_save ['nope']: no module"),
    "modules_to_save typo": ({"modules_to_save": ["lm_heads"]}, "LoraSource modules_to_save ['lm_heads']: no module"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_lora_settings_are_refused_in_one_line(case):
    """Numbers PEFT would take silently (alpha 0 trains nothing, dropout 1 drops every input, NaN poisons the
    weights), targets it fails on with a traceback, and modules_to_save it skips without a word."""
    kwargs, message = BAD_SETTINGS[case]
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        lora(**kwargs).load_model()
    assert "\n" not in str(err.value)


def test_modules_to_save_matched_by_suffix_is_accepted():
    model = lora(modules_to_save=["embed_tokens"], target_modules=["q_proj"]).load_model()
    assert any("embed_tokens" in n and p.requires_grad for n, p in model.named_parameters())
