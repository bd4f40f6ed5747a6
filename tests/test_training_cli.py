"""The command line's training settings: optimizer / scheduler by class_path, eval every N optimizer steps, a quiet run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cli  # imported here, not under capsys: Lightning binds its log handler to the stderr of import time

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, data: dict, *, val: bool = True, lora: bool = False, seed: bool = True, **trainer) -> Path:
    tiny = {"class_path": "lit_align.models.TinyModel", "init_args": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}}
    model = {"class_path": "lit_align.peft_config.LoraSource", "init_args": {"base": tiny, "r": 2}} if lora else tiny
    reference = "lit_align.reference.AdapterDisabledReference" if lora else "lit_align.reference.FrozenReference"
    data_args = {"train_path": str(data["train"]), "batch_size": 2, "max_length": 64, "max_prompt_length": 48, "seed": 3}
    if val:
        data_args["val_path"] = str(data["val"])
    config = {
        "model": {"model": model, "reference": {"class_path": reference}, "lr": 1e-3},
        "data": {"class_path": "lit_align.data.PreferenceDataModule", "init_args": data_args},
        "trainer": {
            "max_steps": 4, "enable_model_summary": False, "enable_progress_bar": False, **trainer,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path), "name": "run", "version": ""}},
        },
    }
    if seed:
        config["seed_everything"] = 0
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def error_lines(capsys) -> list[str]:
    """The ``error:`` lines of stderr (Lightning's INFO lines, such as "Seed set to 0", may precede them)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def metrics(tmp_path: Path) -> list[dict]:
    with open(tmp_path / "run" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("args, top_level", [
    (["--optimizer", "torch.optim.SGD"], None),
    (["--lr_scheduler", "torch.optim.lr_scheduler.StepLR"], None),
    ([], {"optimizer": {"class_path": "torch.optim.SGD"}}),
    ([], {"lr_scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1}}}),
])
def test_lightning_top_level_optimizer_keys_are_refused_with_a_pointer(tmp_path, sort_task, capsys, args, top_level):
    """LightningCLI's own --optimizer / --lr_scheduler would bypass the parameter groups: refused, in one line."""
    config = write_config(tmp_path, sort_task)
    if top_level:
        config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), **top_level}))
    capsys.readouterr()
    assert cli.run(["fit", "--config", str(config), *args]) == 2
    (err,) = error_lines(capsys)
    assert "the optimizer is model.optimizer and the scheduler model.scheduler" in err


@pytest.mark.parametrize("key", ["model.optimizer", "model.scheduler"])
def test_a_class_path_from_a_missing_package_is_one_short_line(tmp_path, sort_task, capsys, key):
    """bitsandbytes' 8-bit AdamW where bitsandbytes is not installed (a package name that cannot exist for the scheduler)."""
    import importlib.util

    value = "bitsandbytes.optim.AdamW8bit" if key == "model.optimizer" else "no_such_package_x.StepLR"
    if importlib.util.find_spec(value.split(".")[0]) is not None:
        pytest.skip(f"{value.split('.')[0]} is installed here")
    config = write_config(tmp_path, sort_task)
    capsys.readouterr()
    assert cli.run(["fit", "--config", str(config), f"--{key}", value]) == 2
    (err,) = error_lines(capsys)
    package = value.split(".")[0]
    assert err.startswith(f"error: {key} = {value} cannot be imported: package '{package}' is not installed"), err
    assert len(err) < 200, err


def test_an_optimizer_init_arg_that_the_groups_override_is_refused_on_the_command_line(tmp_path, sort_task, capsys):
    config = write_config(tmp_path, sort_task)
    capsys.readouterr()
    status = cli.run(["fit", "--config", str(config), "--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.5"])
    (err,) = error_lines(capsys)
    assert status == 1
    assert "model.optimizer.init_args.lr = 0.5 would be ignored" in err and "set model.lr instead" in err


@pytest.mark.slow
def test_optimizer_and_scheduler_by_class_path_run_the_fit(tmp_path, sort_task):
    import torch

    config = write_config(tmp_path, sort_task, val=False)
    run = cli.main(["fit", "--config", str(config), "--model.optimizer", "torch.optim.SGD", "--model.optimizer.momentum", "0.9",
                    "--model.scheduler", "torch.optim.lr_scheduler.StepLR", "--model.scheduler.step_size", "1",
                    "--model.scheduler.gamma", "0.5", "--trainer.log_every_n_steps", "1"])
    (optimizer,) = run.trainer.optimizers
    assert type(optimizer) is torch.optim.SGD and all(g["momentum"] == 0.9 for g in optimizer.param_groups)
    assert [float(r["train/lr"]) for r in metrics(tmp_path) if r["train/lr"]] == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]
    assert saved["optimizer"]["class_path"] == "torch.optim.SGD" and saved["optimizer"]["init_args"]["momentum"] == 0.9
    assert not {"lr", "weight_decay"} & set(saved["optimizer"]["init_args"])  # SGD's defaults, unused: model.lr is the rate
    assert saved["scheduler"]["class_path"] == "torch.optim.lr_scheduler.StepLR"


@pytest.mark.slow
def test_val_every_n_steps_counts_optimizer_steps_under_accumulation(tmp_path, sort_task):
    """4 optimizer steps of 2 micro-batches, validation every 2 steps: 2 validations (val_check_interval=2 would give 4)."""
    config = write_config(tmp_path, sort_task, accumulate_grad_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    cli.main(["fit", "--config", str(config), "--trainer.val_every_n_steps", "2"])
    val_steps = [int(r["step"]) for r in metrics(tmp_path) if r.get("val/loss")]
    assert val_steps == [1, 3], val_steps  # after optimizer steps 2 and 4 (the logger's step is 0-based)


def test_val_every_n_steps_and_val_check_interval_together_are_refused(tmp_path, sort_task, capsys):
    config = write_config(tmp_path, sort_task)
    capsys.readouterr()
    status = cli.run(["fit", "--config", str(config), "--trainer.val_every_n_steps", "2", "--trainer.val_check_interval", "3"])
    (err,) = error_lines(capsys)
    assert status == 1 and "trainer.val_every_n_steps (2) and trainer.val_check_interval (3) both set" in err



@pytest.mark.parametrize("every, max_steps", [(5, 4), (100, 4), (3, 2)])
def test_val_every_n_steps_beyond_max_steps_is_refused(tmp_path, sort_task, capsys, every, max_steps):
    """A validation interval longer than the run would never validate: refused in one line, before the model loads."""
    config = write_config(tmp_path, sort_task)
    capsys.readouterr()
    status = cli.run(["fit", "--config", str(config), "--trainer.val_every_n_steps", str(every), "--trainer.max_steps", str(max_steps)])
    (err,) = error_lines(capsys)
    assert status == 1 and f"trainer.val_every_n_steps ({every}) is more than trainer.max_steps ({max_steps})" in err


@pytest.mark.parametrize("every, max_steps", [(4, 4), (1, 4), (7, -1), (7, None)])
def test_val_every_n_steps_within_the_run_or_an_open_ended_run_is_accepted(every, max_steps):
    from lit_align.trainer import val_check_settings

    settings = val_check_settings(every, {"max_steps": max_steps, "accumulate_grad_batches": 2})
    assert settings == {"val_check_interval": 2 * every, "check_val_every_n_epoch": None}


NOISE = (
    "No seed found",  # Lightning, when seed_everything is left at `true`
    "is_gradient_checkpointing",  # PEFT reading transformers' deprecated alias
    "Total length of",  # Lightning, without validation data
    "Tip:",  # Lightning's litlogger / cloud advertisements
    "Epoch 0/-2", "v_num",  # Lightning's progress bar under max_steps / with a logger version
)


@pytest.mark.slow
def test_a_normal_run_prints_no_noise_and_a_bar_in_optimizer_steps(tmp_path, sort_task):
    """LoRA (PEFT), no validation data, no seed_everything in the config, gradient accumulation: the real command line."""
    config = write_config(tmp_path, sort_task, val=False, lora=True, seed=False, accumulate_grad_batches=2,
                          enable_progress_bar=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "cli.py", "fit", "--config", str(config)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    found = [line for line in output.splitlines() if any(noise in line for noise in NOISE)]
    assert not found, found
    bar = [line for line in output.replace("\r", "\n").splitlines() if "train_loss" in line]
    assert bar and "4/4" in bar[-1], bar  # 4 optimizer steps of max_steps 4 (8 batches)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["seed_everything"] == 0  # the seed the run used is recorded


@pytest.mark.slow
def test_the_shipped_logger_list_writes_csv_and_tensorboard(tmp_path, sort_task):
    """configs/loggers/tensorboard.yaml layered over a fit: metrics.csv and TensorBoard events, both with train/lr."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    layer = yaml.safe_load((REPO / "configs" / "loggers" / "tensorboard.yaml").read_text())
    for logger in layer["trainer"]["logger"]:
        logger["init_args"].update(save_dir=str(tmp_path), name="run")
    (tmp_path / "loggers.yaml").write_text(yaml.safe_dump(layer))
    config = write_config(tmp_path, sort_task, val=False)
    cli.main(["fit", "--config", str(config), "--config", str(tmp_path / "loggers.yaml"), "--trainer.log_every_n_steps", "2"])
    assert [int(r["step"]) for r in metrics(tmp_path) if r.get("train/lr")] == [1, 3]
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/lr")] == [1, 3]
    assert {"train/loss", "train/grad_norm", "train/tokens_per_s"} <= set(events.Tags()["scalars"])
