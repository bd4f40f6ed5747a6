"""Every numeric setting of the Trainer, the checkpoint group and the model sources, swept with invalid
values (0, -1, NaN, inf, huge): each is refused in ONE line naming the key before anything runs, or is
listed with what it means (``lit_align.settings.ACCEPTED``, ``lit_align.models.limits.ACCEPTED``).

The settings are derived from the signatures, so a setting Lightning or a model source adds later is
swept (and must get a rule) without editing this file.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from pathlib import Path

import pytest
import torch

import cli  # (before capsys: Lightning binds its log handler to the stderr of import time)
from lit_align.errors import ConfigError
from lit_align.models import PretrainedModel, SmolLM2, TinyModel
from lit_align.models import limits
from lit_align.peft_config import LoraSource
from lit_align.settings import ACCEPTED, CHECKPOINT_RULES, TRAINER_RULES, check_checkpoint_settings, check_trainer_settings
from tests.test_cli_errors import assert_one_line, case_dir, run_cli  # noqa: F401 (case_dir is a fixture)

VALUE_CLASSES = ("0", "-1", "nan", "inf", "huge")


@pytest.fixture(autouse=True)
def no_cluster_launch(monkeypatch):
    """As a plain launch: a variable left by another test must not make num_nodes > 1 wait for other nodes."""
    from lit_align.settings import CLUSTER_VARIABLES

    for name in CLUSTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def value_of(kind: str, numeric: tuple[type, ...]) -> int | float:
    integer = int in numeric and float not in numeric
    return {"0": 0, "-1": -1, "nan": math.nan, "inf": math.inf, "huge": 10**12 if integer else 1e30}[kind]


def numeric_parameters(cls: type) -> dict[str, tuple[type, ...]]:
    """Constructor parameters whose type admits a plain int or float (directly or in a Union), with those types."""
    hints = typing.get_type_hints(inspect.unwrap(cls.__init__))
    found = {}
    for name in inspect.signature(cls.__init__).parameters:
        hint = hints.get(name)
        members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        numeric = tuple(t for t in members if t in (int, float))
        if numeric:
            found[name] = numeric
    return found


def trainer_class():
    import lightning as L

    return L.Trainer


def checkpoint_class():
    from lightning.pytorch.callbacks import ModelCheckpoint

    return ModelCheckpoint


def test_every_numeric_trainer_and_checkpoint_setting_has_a_rule():
    assert set(numeric_parameters(trainer_class())) == set(TRAINER_RULES)
    assert set(numeric_parameters(checkpoint_class())) == set(CHECKPOINT_RULES)
    assert set(numeric_parameters(TinyModel)) == {"hidden_size", "num_layers", "num_heads", "intermediate_size",
                                                  "max_position_embeddings", "seed", "num_key_value_heads", "vocab_size",
                                                  "rope_theta"}  # (the derivation itself finds them)


GROUPS = {"trainer": (trainer_class, check_trainer_settings), "checkpoint": (checkpoint_class, check_checkpoint_settings)}
CASES = [(group, key, kind) for group, (cls, _) in GROUPS.items() for key in sorted(numeric_parameters(cls())) for kind in VALUE_CLASSES]


@pytest.mark.parametrize("group,key,kind", CASES, ids=[f"{g}.{k}={v}" for g, k, v in CASES])
def test_trainer_and_checkpoint_settings_refused_in_one_line_or_documented(group, key, kind):
    cls, check = GROUPS[group]
    value = value_of(kind, numeric_parameters(cls())[key])
    if (f"{group}.{key}", kind) in ACCEPTED:
        check({key: value})
        settings = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False} if group == "trainer" else {}
        if group == "checkpoint" and key == "every_n_epochs":
            settings["every_n_train_steps"] = None
        built = (cli.EvaluatingTrainer if group == "trainer" else cls())(**settings, **{key: value})
        assert built is not None  # the library takes it too
        return
    with pytest.raises(ConfigError) as err:
        check({key: value})
    message = str(err.value)
    assert f"{group}.{key}" in message and "\n" not in message, message


@pytest.mark.parametrize("source,required", [(TinyModel, {}), (LoraSource, {"base": TinyModel(hidden_size=32, num_heads=2, num_layers=1)}),
                                             (PretrainedModel, {"path": "org/name"}), (SmolLM2, {})], ids=lambda x: getattr(x, "__name__", ""))
def test_model_source_settings_refused_in_one_line_or_documented(source, required):
    for key, numeric in numeric_parameters(source).items():
        for kind in VALUE_CLASSES:
            value = value_of(kind, numeric)
            if (f"{source.__name__}.{key}", kind) in limits.ACCEPTED:
                built = source(**required, **{key: value})
                if limits.ACCEPTED[f"{source.__name__}.{key}", kind].startswith("refused when the model is built"):
                    with pytest.raises(ConfigError, match=key):
                        built.load_model()
                continue
            with pytest.raises(ConfigError) as err:
                source(**required, **{key: value})
            message = str(err.value)
            assert key in message and "\n" not in message, (key, kind, message)


# through the command line (cli.run in-process): the cases, each one line naming the key and value
CLI_CASES = {
    "accumulate_grad_batches 0": (["--trainer.accumulate_grad_batches", "0"], ["trainer.accumulate_grad_batches", "got 0"]),
    "max_steps -5": (["--trainer.max_steps", "-5"], ["trainer.max_steps", "-5"]),
    "max_steps 0": (["--trainer.max_steps", "0"], ["trainer.max_steps", "got 0", "untrained model"]),
    "max_epochs 0": (["--trainer.max_steps", "-1", "--trainer.max_epochs", "0"], ["trainer.max_epochs", "untrained model"]),
    "limit_train_batches 0": (["--trainer.limit_train_batches", "0"], ["trainer.limit_train_batches", "untrained model"]),
    "gradient_clip_val -1": (["--trainer.gradient_clip_val", "-1"], ["trainer.gradient_clip_val", "-1"]),
    "log_every_n_steps 0": (["--trainer.log_every_n_steps", "0"], ["trainer.log_every_n_steps", "got 0"]),
    "val_check_interval 0": (["--trainer.val_check_interval", "0"], ["trainer.val_check_interval", "got 0"]),
    "limit_val_batches 1.5": (["--trainer.limit_val_batches", "1.5"], ["trainer.limit_val_batches", "1.5"]),
    "devices 0": (["--trainer.devices", "0"], ["trainer.devices", "got 0"]),
    "devices text": (["--trainer.devices", "cuda"], ["trainer.devices", "'cuda'"]),
    "val_check_interval text": (["--trainer.val_check_interval", "soon"], ["trainer.val_check_interval", "'soon'", "DD:HH:MM:SS"]),
    "num_nodes 4": (["--trainer.num_nodes", "4"], ["trainer.num_nodes 4", "multi-node"]),
    "every_n_train_steps -1": (["--checkpoint.every_n_train_steps", "-1"], ["checkpoint.every_n_train_steps", "-1"]),
    "save_top_k -2": (["--checkpoint.save_top_k", "-2"], ["checkpoint.save_top_k", "-2"]),
    "every_n_epochs with the step default": (["--checkpoint.every_n_epochs", "1"], ["checkpoint.every_n_epochs", "set the other to null"]),
    "checkpoint mode (Lightning's check)": (["--checkpoint.mode", "highest"], ["MisconfigurationException", "mode", "highest"]),
    "hidden_size 0": (["--model.model.init_args.hidden_size", "0"], ["TinyModel", "hidden_size", "got 0"]),
    "num_heads not dividing": (["--model.model.init_args.num_heads", "3"], ["TinyModel", "num_heads (3)", "hidden_size (32)"]),
    "odd head size": (["--model.model.init_args.num_heads", "32"], ["TinyModel", "must be even"]),
    "num_key_value_heads not dividing": (["--model.model.init_args.num_key_value_heads", "3"], ["num_key_value_heads (3)"]),
    "huge model": (["--model.model.init_args.hidden_size", "1048576"], ["TinyModel", "parameters", "memory"]),
    "rope_theta 0": (["--model.model.init_args.rope_theta", "0"], ["TinyModel", "rope_theta", "got 0"]),
    "positions below max_length": (["--model.model.init_args.max_position_embeddings", "16"],
                                   ["max_length (64)", "max_position_embeddings (16)"]),
    "unknown dtype": (["--model.model", "lit_align.models.PretrainedModel", "--model.model.path", "org/x", "--model.model.dtype", "fp8"],
                      ["PretrainedModel", "unknown dtype 'fp8'"]),
    "a package Lightning needs": (["--trainer.precision", "transformer-engine"], ["trainer", "transformer_engine"]),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_command_line_refusals_are_one_line(name, case_dir, capsys):  # noqa: F811
    args, expected = CLI_CASES[name]
    rc, lines = run_cli(["fit", "--config", case_dir["config"], *args], capsys)
    assert_one_line(rc, lines, *expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_accelerator_on_a_cpu_machine_is_one_line(accelerator, case_dir, capsys):  # noqa: F811
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--trainer.accelerator", accelerator], capsys)
    assert_one_line(rc, lines, f"trainer.accelerator '{accelerator}'", "no GPU", "accelerator: cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU")
@pytest.mark.parametrize("devices", ["-1", "0,1", "[0, 1]"])
def test_gpu_device_choices_on_a_cpu_machine_are_one_line(devices, case_dir, capsys):  # noqa: F811
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--trainer.devices", devices], capsys)
    assert_one_line(rc, lines, "trainer.devices", "GPU")


def test_lightnings_own_refusal_during_fit_is_one_line(case_dir, tmp_path, capsys):  # noqa: F811
    # a fraction of the 4 training batches that is less than one batch: Lightning refuses it when the data is known
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--trainer.limit_train_batches", "0.01",
                         "--trainer.logger.init_args.save_dir", tmp_path], capsys)
    assert_one_line(rc, lines, "MisconfigurationException", "limit_train_batches")


@pytest.mark.slow
@pytest.mark.parametrize("group,key,kind", [c for c in CASES if (f"{c[0]}.{c[1]}", c[2]) not in ACCEPTED],
                         ids=[f"{g}.{k}={v}" for g, k, v in CASES if (f"{g}.{k}", v) not in ACCEPTED])
def test_every_refused_value_is_one_line_through_the_command_line(group, key, kind, case_dir, capsys):  # noqa: F811
    numeric = numeric_parameters(GROUPS[group][0]())[key]
    value = value_of(kind, numeric)
    rc, lines = run_cli(["fit", "--config", case_dir["config"], f"--{group}.{key}", repr(value) if kind != "huge" else str(value)], capsys)
    assert rc in (1, 2) and len(lines) == 1 and lines[0].startswith("error: ") and f"{group}.{key}" in lines[0], (rc, lines)


def test_enable_checkpointing_false_runs_without_the_checkpoint_group(case_dir, tmp_path, capsys):  # noqa: F811
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--trainer.enable_checkpointing", "false",
                         "--trainer.logger.init_args.save_dir", tmp_path], capsys)
    assert rc == 0, lines
    runs = [p for p in Path(tmp_path).rglob("config.yaml")]
    assert len(runs) == 1 and not list(runs[0].parent.rglob("*.ckpt"))  # trained, and wrote no checkpoint
    assert (runs[0].parent / "hf" / "config.json").is_file()
