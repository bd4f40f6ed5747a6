"""End to end through the CLI: fit, the step-0 invariant, checkpoints, export and evaluate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import quiet_trainer


def fit_config(tmp_path: Path, data: dict, steps: int = 4, **model) -> Path:
    config = {
        "seed_everything": 0,
        "model": {
            "model": {"class_path": "lit_align.models.TinyModel", "init_args": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}},
            "loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.1}},
            "reference": {"class_path": "lit_align.reference.FrozenReference"},
            "lr": 1e-3,
            **model,
        },
        "data": {
            "class_path": "lit_align.data.PreferenceDataModule",
            "init_args": {"train_path": str(data["train"]), "val_path": str(data["val"]), "batch_size": 4, "max_length": 64, "max_prompt_length": 48},
        },
        "trainer": {
            "max_epochs": 1, "limit_train_batches": steps, "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path), "name": "run", "version": ""}},
        },
    }
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fitted_run(root: Path, steps: int = 2) -> dict:
    """A short fit through the CLI (sort-task data, fit_config): its root, data, config path and last.ckpt."""
    import cli
    from benchmarks.demos.sort_task import write_task

    data = write_task(root / "data", train=16, val=8, test=8)
    config = fit_config(root, data, steps=steps)
    cli.main(["fit", "--config", str(config)])
    return {"root": root, "data": data, "config": str(config), "ckpt": root / "run" / "checkpoints" / "last.ckpt"}


def test_step0_frozen_copy_gives_rewards_zero_and_loss_ln2(tiny_source, sort_task):
    """The policy and its frozen copy agree exactly, so D = 0: loss = -log sigmoid(0) = ln 2, rewards 0."""
    from lit_align.data import PreferenceDataModule
    from lit_align.module import PreferenceModule

    module = PreferenceModule(model=tiny_source)
    data = PreferenceDataModule(train_path=str(sort_task["train"]), val_path=str(sort_task["val"]), batch_size=5)
    (metrics,) = quiet_trainer().validate(module, data)
    assert metrics["val/loss"] == pytest.approx(math.log(2), abs=1e-7)
    for key in ("val/rewards/chosen", "val/rewards/rejected", "val/rewards/margins", "val/rewards/accuracies", "val/kl/per_token"):
        assert metrics[key] == 0.0, key


def test_fit_changes_the_policy_and_not_the_frozen_reference(tiny_source, sort_task):
    from lit_align.data import PreferenceDataModule
    from lit_align.module import PreferenceModule

    module = PreferenceModule(model=tiny_source, lr=1e-2)
    data = PreferenceDataModule(train_path=str(sort_task["train"]), batch_size=4)
    start = {k: v.clone() for k, v in tiny_source.load_model().state_dict().items()}
    quiet_trainer(max_steps=3).fit(module, data)
    policy, reference = module.policy.state_dict(), module.reference.model.state_dict()
    assert any(not torch.equal(policy[k], start[k]) for k in start)
    assert all(torch.equal(reference[k], start[k]) for k in start)
    assert all(not p.requires_grad for p in module.reference.parameters())
    assert not module.reference.model.training


def test_activation_checkpointing_really_takes_effect(sort_task):
    """With checkpointing on, the policy forward keeps far fewer activations for backward.

    Measured by the elements autograd saves during a training-mode forward (the recompute itself does
    not re-fire module hooks in transformers 5, so counting calls would not show it).
    """
    from lit_align.data import PreferenceDataModule
    from lit_align.logprobs import sequence_logps
    from lit_align.models import TinyModel
    from lit_align.module import PreferenceModule

    saved = {}
    for enabled in (False, True):
        module = PreferenceModule(model=TinyModel(hidden_size=32, num_layers=2, num_heads=2), activation_checkpointing=enabled)
        data = PreferenceDataModule(train_path=str(sort_task["train"]), batch_size=4)
        quiet_trainer(max_steps=1).fit(module, data)  # Lightning must leave the policy in train mode
        assert module.policy.training
        batch = next(iter(data.train_dataloader()))
        count = [0]

        def pack(t):
            count[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            sequence_logps(module.policy, batch)
        saved[enabled] = count[0]
    assert saved[True] < saved[False] / 4, saved


@pytest.mark.slow
def test_cli_fit_then_evaluate_reproduces_the_last_validation(tmp_path, sort_task):
    import cli

    cli.main(["fit", "--config", str(fit_config(tmp_path, sort_task))])
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["loss"]["class_path"] == "lit_align.losses.DPO"
    rows = [r for r in (run / "metrics.csv").read_text().splitlines()]
    header = rows[0].split(",")
    last_val = [dict(zip(header, r.split(","))) for r in rows[1:] if r.split(",")[header.index("val/loss")]][-1]

    # the exported directory loads as a plain Hugging Face model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    exported = AutoModelForCausalLM.from_pretrained(run / "hf")
    AutoTokenizer.from_pretrained(run / "hf")
    assert exported.config.num_hidden_layers == 1

    for ckpt in (run / "checkpoints" / "last.ckpt", run / "hf"):
        out = tmp_path / f"eval-{ckpt.name}"
        cli.main(["evaluate", "--config", str(run / "config.yaml"), "--ckpt_path", str(ckpt), "--output_dir", str(out)])
        results = json.loads((out / "results.json").read_text())
        assert results["complete"] is True
        for key in ("val/loss", "val/rewards/margins", "val/rewards/accuracies", "val/logps/chosen"):
            assert results["metrics"][key] == pytest.approx(float(last_val[key]), abs=1e-5), (ckpt.name, key)

    # A cached reference filled at evaluation time scores with the starting weights (the same numbers
    # as the frozen reference the fit validated with), not with the tuned policy it is attached to;
    # from a file checkpoint and from the export, with a fresh cache each time.
    for ckpt in (run / "checkpoints" / "last.ckpt", run / "hf"):
        out = tmp_path / f"eval-cached-{ckpt.name}"
        cli.main(["evaluate", "--config", str(run / "config.yaml"), "--ckpt_path", str(ckpt), "--output_dir", str(out),
                  "--model.reference", "lit_align.reference.CachedReference",
                  "--model.reference.init_args.cache_dir", str(tmp_path / f"cache-{ckpt.name}")])
        results = json.loads((out / "results.json").read_text())
        for key in ("val/loss", "val/rewards/margins", "val/rewards/accuracies"):
            assert results["metrics"][key] == pytest.approx(float(last_val[key]), abs=1e-5), (ckpt.name, key)

    # no fit config at all: LightningCLI rebuilds the module (loss, reference, model source) from the
    # checkpoint's hyper-parameters, and a task list runs on it
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(yaml.safe_dump({"tasks": [{"class_path": "evals.verifier.VerifierTask",
                                                "init_args": {"data_path": str(sort_task["test"]), "max_new_tokens": 4}}]}))
    out = tmp_path / "eval-bare"
    cli.main(["evaluate", "--config", str(tasks), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--output_dir", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["metrics"]["verifier/n"] == 16
    assert (out / "verifier" / "answers.jsonl").is_file()


def test_config_secrets_are_redacted():
    from cli import redact

    config = {"judge": {"api_key": "sk-live-123", "api_key_env": "OPENAI_API_KEY"}, "x": [{"hf_token": "hf_abc"}]}
    assert redact(config) == {"judge": {"api_key": None, "api_key_env": "OPENAI_API_KEY"}, "x": [{"hf_token": None}]}


def test_incompatible_loss_and_reference_stop_at_construction(tiny_source):
    from lit_align.losses import DPO
    from lit_align.module import PreferenceModule
    from lit_align.reference import NoReference

    with pytest.raises(ValueError, match="DPO needs reference log-probs but the reference is NoReference"):
        PreferenceModule(model=tiny_source, loss=DPO(), reference=NoReference())


def test_likelihood_objective_needs_an_unconditional_reference(tiny_source):
    from lit_align.losses import LikelihoodDPO
    from lit_align.module import PreferenceModule
    from lit_align.reference import FrozenReference, UnconditionalReference

    from lit_align.losses import SFT, WeightedLoss

    for loss in (LikelihoodDPO(), WeightedLoss([LikelihoodDPO(), SFT()])):  # a composite must not hide it
        with pytest.raises(ValueError, match="use UnconditionalReference or CachedReference"):
            PreferenceModule(model=tiny_source, loss=loss, reference=FrozenReference())
    PreferenceModule(model=tiny_source, loss=LikelihoodDPO(), reference=UnconditionalReference())


def test_lr_schedule_shapes():
    from lit_align.optim import lr_factor

    assert [lr_factor(s, 10, 2, "cosine", 0.0) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, 10, 2, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine", 0.0) == pytest.approx(0.5)  # halfway through the decay
    assert lr_factor(6, 10, 2, "linear", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(9, 10, 0, "constant", 0.0) == 1.0


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_bf16_training_keeps_fp32_log_probs(tiny_source, sort_task, precision):
    """bf16 weights (true) or autocast (mixed): the step runs, the loss is finite, log-probs stay fp32."""
    from lit_align.data import PreferenceDataModule
    from lit_align.module import PreferenceModule

    module = PreferenceModule(model=tiny_source, lr=1e-3)
    data = PreferenceDataModule(train_path=str(sort_task["train"]), batch_size=4)
    seen = []
    forward_step = module.forward_step

    def recording(batch):
        policy, reference, out = forward_step(batch)
        seen.append((policy.chosen.dtype, out.losses.detach()))
        return policy, reference, out

    module.forward_step = recording
    quiet_trainer(max_steps=2, precision=precision).fit(module, data)
    assert all(dtype == torch.float32 and torch.isfinite(loss).all() for dtype, loss in seen)
    expected = torch.bfloat16 if precision == "bf16-true" else torch.float32
    assert next(module.policy.parameters()).dtype == expected


def test_compile_switch_compiles_each_decoder_layer_and_keeps_keys(tiny_source):
    from lit_align.module import PreferenceModule

    plain, compiled = PreferenceModule(model=tiny_source), PreferenceModule(model=tiny_source, compile=True)
    plain.configure_model()
    compiled.configure_model()
    layers = compiled.policy.model.layers
    assert all(layer._compiled_call_impl is not None for layer in layers)
    assert plain.policy.model.layers[0]._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no _orig_mod. prefixes
