"""Portable exports: a LoRA run's hf/ names its base by the base's own identity, carries a real model card,
optionally the merged model; ``cli.py export`` writes the same from any checkpoint; and a fresh process with
plain transformers (and PEFT) reloads each of them to the module's logits."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO

RELOAD = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM
folder, kind, out = sys.argv[1:4]
if kind == "adapter":
    from peft import PeftModel
    base_name = json.load(open(f"{folder}/adapter_config.json"))["base_model_name_or_path"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_name), folder)
else:
    model = AutoModelForCausalLM.from_pretrained(folder)
ids = torch.load(out + ".ids")
with torch.no_grad():
    torch.save(model.eval()(ids).logits, out)
"""


def reload_logits(folder: Path, kind: str, ids: torch.Tensor, cwd: Path) -> torch.Tensor:
    """Logits of ``folder`` loaded in a fresh Python process (no lit-align import), run from ``cwd``."""
    out = cwd / f"logits-{folder.name}-{kind}.pt"
    torch.save(ids, str(out) + ".ids")
    result = subprocess.run([sys.executable, "-c", RELOAD, str(folder), kind, str(out)], cwd=cwd, capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


def lora_fit_config(tmp_path: Path, data: dict, merged: bool) -> Path:
    config = {
        "seed_everything": 0,
        "model": {
            "model": {"class_path": "lit_align.peft_config.LoraSource", "init_args": {
                "base": {"class_path": "lit_align.models.PretrainedModel", "init_args": {"path": "base"}},
                "r": 4, "alpha": 8, "use_dora": True, "modules_to_save": ["lm_head"]}},
            "reference": {"class_path": "lit_align.reference.AdapterDisabledReference"},
            "lr": 1e-2, "warmup_steps": 0,
        },
        "data": {"class_path": "lit_align.data.PreferenceDataModule", "init_args": {
            "train_path": str(data["train"]), "val_path": str(data["val"]), "batch_size": 4, "max_length": 64,
            "max_prompt_length": 48}},
        "hf_export": {"merged": merged},
        "trainer": {"max_steps": 3, "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path), "name": "run", "version": ""}}},
    }
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def lora_run(tmp_path, sort_task, monkeypatch):
    """A 3-step DoRA + modules_to_save fit on a tiny model saved at the relative path ``base``; returns the run,
    its policy's logits on fixed ids (in this process), and the ids."""
    import cli
    from lit_align.models import save_tiny

    monkeypatch.chdir(tmp_path)
    save_tiny(tmp_path / "base", hidden_size=32, num_layers=1, num_heads=2, tie_word_embeddings=False)
    app = cli.main(["fit", "--config", str(lora_fit_config(tmp_path, sort_task, merged=True))])
    ids = torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(0))
    policy = app.model.policy.eval()
    with torch.no_grad():
        logits = policy(ids).logits
    return tmp_path / "run", logits, ids, sort_task


@pytest.mark.slow
def test_lora_fit_export_is_portable_carries_a_card_and_reloads_to_the_same_logits(lora_run, tmp_path):
    from cli import main as cli_main

    run, logits, ids, data = lora_run
    hf = run / "hf"
    adapter_config = json.loads((hf / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "base"  # the configured name, not a folder of this machine
    assert adapter_config["use_dora"] and adapter_config["modules_to_save"] == ["lm_head"]

    card = (hf / "README.md").read_text()
    assert "More Information Needed" not in card  # PEFT's empty template is gone
    assert "optimizer steps: 3" in card and "| train/loss |" in card and f"train_path: `{data['train']}`" in card
    assert "AdapterDisabledReference" in card and "## Config" in card and "use_dora: true" in card

    # a fresh process, plain transformers + PEFT: the adapter on the named base, and the merged model
    assert torch.equal(reload_logits(hf, "adapter", ids, tmp_path), logits)
    merged = reload_logits(hf / "merged", "full", ids, tmp_path)
    torch.testing.assert_close(merged, logits, atol=1e-5, rtol=1e-5)  # merging rounds W + s*BA once

    # cli.py evaluate reads the adapter folder as it reads the checkpoint (the fit's config names the base)
    results = {}
    for ckpt in (run / "checkpoints" / "last.ckpt", hf):
        out = tmp_path / f"eval-{ckpt.name}"
        cli_main(["evaluate", "--config", str(run / "config.yaml"), "--ckpt_path", str(ckpt), "--output_dir", str(out)])
        results[ckpt.name] = json.loads((out / "results.json").read_text())["metrics"]
    assert results["hf"]["val/rewards/margins"] != 0.0
    for key in ("val/loss", "val/rewards/margins", "val/logps/chosen"):
        assert results["hf"][key] == pytest.approx(results["last.ckpt"][key], abs=1e-6), key

    # cli.py export from the checkpoint alone (the module rebuilt from its hyper-parameters) writes the same
    import cli

    out = tmp_path / "exported"
    cli.main(["export", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--output_dir", str(out), "--merged", "true"])
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "base"
    assert torch.equal(reload_logits(out, "adapter", ids, tmp_path), logits)
    torch.testing.assert_close(reload_logits(out / "merged", "full", ids, tmp_path), logits, atol=1e-5, rtol=1e-5)
    exported_card = (out / "README.md").read_text()
    assert "optimizer steps: 3" in exported_card and "| train/loss |" in exported_card and "## Config" in exported_card

    # an output folder that holds something is refused without writing
    code = cli.run(["export", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--output_dir", str(out)])
    assert code == 1


@pytest.mark.slow
def test_full_model_export_command_reloads_in_a_fresh_process(tmp_path, sort_task):
    import cli
    from tests.test_fit import fit_config

    app = cli.main(["fit", "--config", str(fit_config(tmp_path, sort_task, steps=2))])
    ids = torch.randint(0, 250, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = app.model.policy.eval()(ids).logits
    out = tmp_path / "exported"
    cli.main(["export", "--config", str(tmp_path / "run" / "config.yaml"),
              "--ckpt_path", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--output_dir", str(out)])
    assert torch.equal(reload_logits(out, "full", ids, tmp_path), logits)
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "optimizer steps: 2" in card and "TinyModel" in card


def test_export_reference_names_the_source_not_a_cache(tmp_path):
    """A GGUF source is named by its file name and full sha256 (computed here independently); a hub name by
    itself and its revision; a LoRA source by its base."""
    from lit_align.models import PretrainedModel
    from lit_align.peft_config import LoraSource

    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 7)
    reference = LoraSource(PretrainedModel(str(gguf))).export_reference()
    assert reference["name"] == "model.Q4_1.gguf" and reference["format"] == "gguf"
    assert reference["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    hub = PretrainedModel("Org/Some-Model", revision="abc123").export_reference()
    assert (hub["name"], hub["revision"], hub["format"]) == ("Org/Some-Model", "abc123", "hub")


def test_model_card_lists_metrics_data_and_steps_and_redacts(tmp_path):
    from callbacks.model_card import metrics_at, model_card

    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,train/loss,val/loss\n0,1,0.9,\n0,2,0.8,\n0,2,,0.7\n0,5,0.1,0.2\n")
    assert metrics_at(csv, 2) == {"train/loss": 0.8, "val/loss": 0.7}  # rows after the checkpoint's step are not its
    config = {"data": {"init_args": {"train_path": "pairs.jsonl"}}, "judge": {"api_key": "sk-not-a-real-key-000"}}
    card = model_card({"name": "Org/M", "format": "hub"}, True, False, 2, metrics_at(csv, 2), config, {"loss": "DPO"})
    assert "base_model: Org/M" in card and "| val/loss | 0.7 |" in card and "`pairs.jsonl`" in card
    assert "optimizer steps: 2" in card and "sk-not-a-real-key" not in card


def test_adapter_names_the_sources_reference_not_the_folder_it_was_loaded_from(tmp_path, monkeypatch):
    """The base is loaded from a local folder (as a GGUF source loads its cache folder) but its export reference
    is another name: adapter_config.json carries that name, and the live PEFT config keeps its own."""
    from callbacks.hf_export import write_export
    from lit_align.models import PretrainedModel, save_tiny
    from lit_align.module import PreferenceModule
    from lit_align.peft_config import LoraSource
    from lit_align.reference import AdapterDisabledReference
    from lit_align.sharding import policy_state

    folder = save_tiny(tmp_path / "cache" / "0123abcd", hidden_size=32, num_layers=1, num_heads=2)
    base = PretrainedModel(str(folder))
    monkeypatch.setattr(base, "export_reference", lambda: {"name": "Org/Tiny-Base", "format": "hub", "revision": "v1"})
    module = PreferenceModule(model=LoraSource(base, r=2), reference=AdapterDisabledReference())
    module.configure_model()
    live = module.policy.peft_config["default"].base_model_name_or_path
    assert live == str(folder)  # what PEFT would have written
    target = write_export(tmp_path / "hf", module, policy_state(module.state_dict()), False, 0, {}, None)
    saved = json.loads((target / "adapter_config.json").read_text())
    assert (saved["base_model_name_or_path"], saved["revision"]) == ("Org/Tiny-Base", "v1")
    assert module.policy.peft_config["default"].base_model_name_or_path == live
    assert "base_model: Org/Tiny-Base" in (target / "README.md").read_text()


def test_merged_export_of_a_qlora_policy_is_refused_before_training(tmp_path):
    from types import SimpleNamespace

    from callbacks.hf_export import HFExport
    from lit_align.errors import ConfigError
    from lit_align.models import PretrainedModel
    from lit_align.peft_config import LoraSource

    module = SimpleNamespace(model_source=LoraSource(PretrainedModel("Org/M"), quantization="4bit"))
    with pytest.raises(ConfigError, match="QLoRA policy .* cannot be merged"):
        HFExport(merged=True).setup(None, module, "fit")
    HFExport(merged=False).setup(None, module, "fit")  # the adapter alone is fine
    HFExport(merged=True).setup(None, SimpleNamespace(model_source=LoraSource(PretrainedModel("Org/M"))), "fit")


@pytest.mark.parametrize("case", ["hf folder", "sharded folder", "not empty", "a file"])
def test_export_command_refuses_in_one_line_and_writes_nothing(tmp_path, case, capsys):
    import cli
    from lit_align.models import save_tiny

    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    if case == "hf folder":
        save_tiny(ckpt, hidden_size=32, num_layers=1, num_heads=2)
    elif case == "sharded folder":
        ckpt.mkdir()
        (ckpt / ".metadata").write_bytes(b"")
    else:
        ckpt = ckpt.with_suffix(".ckpt")
        torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.0"}, ckpt)
        if case == "a file":
            out = tmp_path / "train.jsonl"
            out.write_text("x")
        else:
            out.mkdir()
            (out / "keep.txt").write_text("x")
    model = ["--model.model", "lit_align.models.TinyModel"]
    code = cli.run(["export", *model, "--ckpt_path", str(ckpt), "--output_dir", str(out)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    expected = {"hf folder": "exported Hugging Face folder, not a training checkpoint",
                "sharded folder": "export reads a single-file checkpoint", "not empty": "exists and is not empty",
                "a file": "train.jsonl is a file, not a folder"}[case]
    assert code == 1 and len(errors) == 1 and expected in errors[0], errors
    if case == "a file":
        assert out.read_text() == "x"
    else:
        assert not out.exists() or sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_an_adapter_folder_that_does_not_match_the_configured_policy_is_refused(tmp_path):
    """evaluate --ckpt_path <adapter folder>: another rank, other targets, or no LoRA policy at all: one line each."""
    from lit_align.errors import UserError
    from lit_align.models import TinyModel
    from lit_align.module import PreferenceModule
    from lit_align.peft_config import LoraSource
    from lit_align.reference import AdapterDisabledReference
    from lit_align.trainer import load_for_evaluation

    tiny = dict(hidden_size=32, num_layers=1, num_heads=2)
    saved = tmp_path / "adapter"
    LoraSource(TinyModel(**tiny), r=4, target_modules=["q_proj"]).load_model().save_pretrained(saved)
    cases = {
        "size mismatch": LoraSource(TinyModel(**tiny), r=2, target_modules=["q_proj"]),
        "missing weight": LoraSource(TinyModel(**tiny), r=4, target_modules=["q_proj", "v_proj"]),
        "has none": TinyModel(**tiny),
    }
    for expected, source in cases.items():
        reference = AdapterDisabledReference() if isinstance(source, LoraSource) else None
        module = PreferenceModule(model=source, **({"reference": reference} if reference else {}))
        with pytest.raises(UserError, match=expected):
            load_for_evaluation(module, str(saved), None)
    with pytest.raises(UserError, match="give the fit's config too"):
        load_for_evaluation(PreferenceModule(model=None), str(saved), None)
    good = PreferenceModule(model=LoraSource(TinyModel(**tiny), r=4, target_modules=["q_proj"]), reference=AdapterDisabledReference())
    load_for_evaluation(good, str(saved), None)


def tiny_module(tmp_path: Path, lora: bool):
    from lit_align.models import PretrainedModel, save_tiny
    from lit_align.module import PreferenceModule
    from lit_align.peft_config import LoraSource
    from lit_align.reference import AdapterDisabledReference, FrozenReference

    base = PretrainedModel(str(save_tiny(tmp_path / "base", hidden_size=32, num_layers=1, num_heads=2)))
    module = (PreferenceModule(model=LoraSource(base, r=2), reference=AdapterDisabledReference()) if lora
              else PreferenceModule(model=base, reference=FrozenReference()))
    module.configure_model()
    return module


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", [0, -1])
def test_non_finite_weights_are_never_exported(tmp_path, lora, value, where):
    """A diverged run (fit --model.lr 1e30) exported NaN weights as its hf/ result: the export (end of fit and
    cli.py export share write_export) refuses in one line naming a tensor and writes nothing."""
    from callbacks.hf_export import write_export
    from lit_align.errors import UserError
    from lit_align.sharding import policy_state

    module = tiny_module(tmp_path, lora)
    state = policy_state(module.state_dict())
    name = [k for k, v in state.items() if v.is_floating_point() and (not lora or "lora_" in k)][where]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = value
    with pytest.raises(UserError, match=r"1 of \d+ weight tensors hold NaN or inf \(first " + name.replace(".", r"\.")):
        write_export(tmp_path / "hf", module, state, False, 3, {}, None)
    assert not any(p.name.startswith("hf") for p in tmp_path.iterdir())
    state[name].view(-1)[0] = 0.0
    assert (write_export(tmp_path / "hf", module, state, False, 3, {}, None) / "README.md").is_file()


SECRET = "s3cr3tvalue0123456789"


@pytest.mark.parametrize("where", ["base name", "data path", "val path", "training summary", "config"])
def test_model_card_masks_credentials_wherever_they_appear(tmp_path, where):
    """Only the card's config section was redacted: a signed data URL or a base named by a URL with userinfo
    reached README.md from the Data / Base model / Training lines."""
    from callbacks.hf_export import write_export

    module = tiny_module(tmp_path, lora=True)
    url = f"https://user:{SECRET}@host/data.parquet?sig={SECRET}"
    config = {"data": {"init_args": {"train_path": url if where == "data path" else "pairs.jsonl",
                                     "val_path": f"https://host/v.parquet?token={SECRET}" if where == "val path" else None}}}
    if where == "config":
        config["model"] = {"init_args": {"api_key": SECRET}}
    if where == "base name":
        module.model_source.export_reference = lambda: {"name": url, "format": "hub"}
    if where == "training summary":
        module.lr = f"https://host/?api_key={SECRET}"
    from lit_align.sharding import policy_state

    target = write_export(tmp_path / "hf", module, policy_state(module.state_dict()), False, 1, {}, config)
    card = (target / "README.md").read_text()
    assert SECRET not in card and (where == "config" or "***" in card)  # the config's api_key is dropped (null)
    assert SECRET not in (target / "adapter_config.json").read_text()


def test_an_adapter_is_refused_on_another_base_than_it_was_trained_on(tmp_path, monkeypatch):
    """Same shapes load without an error: an adapter evaluated on another base gave scores of a model nobody trained.
    The adapter's recorded base (its portable reference) must name the configured base, or the same folder."""
    from callbacks.hf_export import write_export
    from lit_align.errors import UserError
    from lit_align.models import PretrainedModel, save_tiny
    from lit_align.module import PreferenceModule
    from lit_align.peft_config import LoraSource
    from lit_align.reference import AdapterDisabledReference
    from lit_align.sharding import policy_state
    from lit_align.trainer import load_for_evaluation

    tiny = dict(hidden_size=32, num_layers=1, num_heads=2)
    base_a, base_b = save_tiny(tmp_path / "a", **tiny, seed=0), save_tiny(tmp_path / "b", **tiny, seed=1)
    monkeypatch.chdir(tmp_path)
    lora = lambda path: PreferenceModule(model=LoraSource(PretrainedModel(path), r=2), reference=AdapterDisabledReference())  # noqa: E731
    trained = lora(str(base_a))
    trained.configure_model()
    adapter = write_export(tmp_path / "hf", trained, policy_state(trained.state_dict()), False, 1, {}, None)
    with pytest.raises(UserError, match=f"trained on the base '{base_a}' but the config's base is '{base_b}'"):
        load_for_evaluation(lora(str(base_b)), str(adapter), None)
    load_for_evaluation(lora("a"), str(adapter), None)  # the same folder, spelled relative to the working directory
    load_for_evaluation(lora(str(base_a)), str(adapter), None)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "Org/Base-v1"}))
    module = lora(str(base_a))
    monkeypatch.setattr(module.model_source, "export_reference", lambda: {"name": "Org/Base-v2", "format": "hub"})
    with pytest.raises(UserError, match="trained on the base 'Org/Base-v1' but the config's base is 'Org/Base-v2'"):
        load_for_evaluation(module, str(adapter), None)


@pytest.mark.parametrize("dirname", ["", ".", "..", "../elsewhere", "a/b", "/tmp/abs", "a\\b"])
def test_export_dirname_is_one_folder_inside_the_run(dirname):
    """dirname '.' made the export replace the whole run directory (checkpoints included); '..' escaped it."""
    from callbacks.hf_export import HFExport
    from lit_align.errors import ConfigError

    with pytest.raises(ConfigError, match="hf_export.dirname"):
        HFExport(dirname=dirname)


@pytest.mark.parametrize("existing", ["checkpoints", "data folder", "a file", "hf with a stray file only"])
def test_export_never_replaces_what_is_not_an_export(tmp_path, existing):
    """hf_export.dirname: checkpoints replaced the run's checkpoints by the export (rmtree, then rename)."""
    from callbacks.hf_export import write_export
    from lit_align.errors import UserError
    from lit_align.sharding import policy_state

    module = tiny_module(tmp_path, lora=False)
    state = policy_state(module.state_dict())
    target = tmp_path / "run" / existing.split()[0]
    target.parent.mkdir()
    if existing == "a file":
        target.write_text("keep")
    else:
        target.mkdir()
        (target / {"checkpoints": "last.ckpt", "data": "train.jsonl", "hf": "notes.txt"}[target.name]).write_text("keep")
    before = sorted(p.name for p in target.parent.rglob("*"))
    with pytest.raises(UserError, match="exists and is not an earlier export"):
        write_export(target, module, state, False, 1, {}, None)
    assert sorted(p.name for p in target.parent.rglob("*")) == before
    previous = write_export(tmp_path / "run" / "hf2", module, state, False, 1, {}, None)  # an earlier export is replaced
    assert write_export(previous, module, state, False, 2, {}, None) == previous
    assert "optimizer steps: 2" in (previous / "README.md").read_text()


@pytest.mark.parametrize("last", ["nan", "inf", "-inf"])
def test_card_metrics_keep_a_non_finite_last_value(tmp_path, last):
    """metrics_at skipped non-finite values, so cli.py export's card showed an older finite value as the final one."""
    import math

    from callbacks.model_card import metrics_at, model_card

    csv = tmp_path / "metrics.csv"
    csv.write_text(f"epoch,step,val/loss\n0,1,0.7\n0,2,{last}\n")
    value = metrics_at(csv, 2)["val/loss"]
    assert not math.isfinite(value) and str(value) == str(float(last))
    card = model_card(None, False, False, 2, metrics_at(csv, 2), None, {})
    assert f"| val/loss | {float(last):.6g} |" in card and "0.7" not in card
