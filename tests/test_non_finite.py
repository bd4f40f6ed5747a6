"""A diverged run is never a result: non-finite gradients stop the fit before the optimizer step
(one check with the loss's), and NaN weights are neither checkpointed, exported nor evaluated."""

from __future__ import annotations

import math

import pytest
import torch

import cli
from lit_align.checkpoint_io import save_atomic
from tests.test_cli_errors import assert_one_line, run_cli
from tests.test_fit import fit_config


@pytest.fixture
def data(tmp_path):
    from benchmarks.demos.sort_task import write_task

    return write_task(tmp_path / "data", train=16, val=8, test=8)


def all_finite(state: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point())


@pytest.mark.parametrize("lr", [1e30, 1e20])
def test_a_huge_learning_rate_stops_on_non_finite_gradients_with_the_last_checkpoint_finite(lr, tmp_path, data, capsys):
    """lr 1e30: the first step is applied (its gradients are finite), the second step's gradients are NaN while
    its loss is still finite, so only the gradient check can stop it. Before, the run exited 0 with NaN weights
    in last.ckpt and hf/."""
    config = fit_config(tmp_path, data, steps=4)
    rc, lines = run_cli(["fit", "--config", config, "--model.lr", str(lr), "--checkpoint.every_n_train_steps", "1"], capsys)
    line = assert_one_line(rc, lines, "non-finite gradients at global step 1", "the step was not taken", "with finite loss")
    assert "Lower model.lr" in line
    run = tmp_path / "run"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 1 and all_finite(checkpoint["state_dict"])
    assert all(all_finite(s) for state in checkpoint["optimizer_states"] for s in state["state"].values())
    assert not (run / "hf").exists()


def test_gradients_are_checked_once_per_optimizer_step_with_accumulation(tmp_path, data, capsys):
    """Accumulation over 2 micro-batches: the check sees both losses and the summed gradients, at the step."""
    config = fit_config(tmp_path, data, steps=4)
    rc, lines = run_cli(["fit", "--config", config, "--model.lr", "1e30", "--trainer.accumulate_grad_batches", "2"], capsys)
    assert_one_line(rc, lines, "non-finite gradients at global step 1", "batches 2, 3")


def test_nan_weights_are_not_checkpointed(tmp_path):
    from lit_align.checkpoint_io import AtomicCheckpointIO
    from lit_align.errors import NonFiniteWeightsError

    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(NonFiniteWeightsError, match="non-finite weights.* \(first policy.w"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"policy.w": torch.tensor([1.0, math.inf])}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(2))  # the previous one stays


def test_nan_weights_are_not_evaluated_nor_exported(tmp_path, data, capsys):
    config = fit_config(tmp_path, data, steps=2)
    cli.main(["fit", "--config", str(config)])
    run = tmp_path / "run"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    name = next(k for k in checkpoint["state_dict"] if k.startswith("policy."))
    checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], math.nan)
    poisoned = tmp_path / "poisoned.ckpt"
    save_atomic(checkpoint, poisoned)  # (a checksum that matches: the file is intact, its weights are not)
    rc, lines = run_cli(["evaluate", "--config", config, "--ckpt_path", poisoned, "--output_dir", tmp_path / "e"], capsys)
    assert_one_line(rc, lines, f"checkpoint {poisoned}", "non-finite weights", name)
    assert not (tmp_path / "e" / "results.json").exists()

    from callbacks.hf_export import HFExport
    from lit_align.errors import NonFiniteWeightsError
    from lit_align.models import TinyModel
    from lit_align.module import PreferenceModule
    from tests.conftest import quiet_trainer

    module = PreferenceModule(model=TinyModel(hidden_size=32, num_layers=1, num_heads=2))
    module.configure_model()
    with torch.no_grad():
        next(module.policy.parameters()).fill_(math.nan)
    trainer = quiet_trainer(default_root_dir=str(tmp_path / "export"))
    trainer.strategy.connect(module)
    with pytest.raises(NonFiniteWeightsError, match="for export to"):
        HFExport().export(trainer, module)
    assert not (tmp_path / "export" / "hf").exists()


def test_an_exported_folder_with_nan_weights_is_not_evaluated(tmp_path, data, capsys):
    import shutil

    from transformers import AutoModelForCausalLM

    config = fit_config(tmp_path, data, steps=1)
    cli.main(["fit", "--config", str(config)])
    exported = tmp_path / "run" / "hf"
    policy = AutoModelForCausalLM.from_pretrained(exported)
    with torch.no_grad():
        next(policy.parameters()).fill_(math.inf)
    shutil.copytree(exported, tmp_path / "hf_inf")
    policy.save_pretrained(tmp_path / "hf_inf")
    rc, lines = run_cli(["evaluate", "--config", config, "--ckpt_path", tmp_path / "hf_inf", "--output_dir", tmp_path / "e"], capsys)
    lines = [line for line in lines if not line.startswith("Loading weights")]  # transformers' progress bar
    assert_one_line(rc, lines, f"exported model {tmp_path / 'hf_inf'}", "non-finite weights")
