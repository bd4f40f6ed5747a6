"""A resume (or an evaluation) never silently runs other settings than the config's (lit_align.resume_config).

One checkpoint is trained once; then a sweep of configs that differ from it in one or several
settings (model source, loss, reference, optimiser, data) must each be refused in one line naming
every differing key, with the run's files untouched; ``--use_checkpoint_config true`` takes the
checkpoint's settings instead.
"""

from __future__ import annotations

import pytest
import yaml

import cli
from tests.test_cli_errors import assert_one_line, run_cli
from tests.test_fit import fitted_run
from tests.test_run_files import snapshot

FIT_DIFFERENCES = {  # command-line overrides -> the keys the refusal must name
    "hidden size": (["--model.model.init_args.hidden_size", "64"], ["model.model.hidden_size"]),
    "num heads": (["--model.model.init_args.num_heads", "4"], ["model.model.num_heads"]),
    "model seed": (["--model.model.init_args.seed", "3"], ["model.model.seed"]),
    "loss class": (["--model.loss", "lit_align.losses.IPO"], ["model.loss (config 'lit_align.losses.IPO'"]),
    "epsilon-dpo": (["--model.loss", "lit_align.losses.EpsilonDPO"], ["model.loss"]),
    "loss beta": (["--model.loss.init_args.beta", "0.3"], ["model.loss.beta"]),
    "label smoothing": (["--model.loss.init_args.label_smoothing", "0.1"], ["model.loss.label_smoothing"]),
    "reference class": (["--model.reference", "lit_align.reference.MovingReference"], ["model.reference"]),
    "reference dtype": (["--model.reference.init_args.dtype", "bfloat16"], ["model.reference.dtype"]),
    "lr": (["--model.lr", "0.5"], ["model.lr"]),
    "schedule": (["--model.schedule", "linear"], ["model.schedule"]),
    "betas": (["--model.betas", "[0.8, 0.9]"], ["model.betas"]),
    "batch size": (["--data.init_args.batch_size", "2"], ["data.batch_size"]),
    "max length": (["--data.init_args.max_length", "32"], ["data.max_length"]),
    "data seed": (["--data.init_args.seed", "5"], ["data.seed"]),
    "format": (["--data.init_args.format", "explicit"], ["data.format"]),
    "accumulation": (["--trainer.accumulate_grad_batches", "4"], ["trainer.accumulate_grad_batches (config 4, checkpoint 1)"]),
    "clipping": (["--trainer.gradient_clip_val", "0.01"], ["trainer.gradient_clip_val (config 0.01, checkpoint 0.0)"]),
    "clip algorithm": (["--trainer.gradient_clip_algorithm", "value"], ["trainer.gradient_clip_algorithm"]),
    "several": (["--model.model.init_args.hidden_size", "64", "--model.loss.init_args.beta", "0.2",
                 "--data.init_args.batch_size", "2", "--model.lr", "0.1"],
                ["model.model.hidden_size", "model.loss.beta", "data.batch_size", "model.lr"]),
}

EVALUATE_DIFFERENCES = {k: v for k, v in FIT_DIFFERENCES.items() if all(key.startswith("model.model") for key in v[1])}
SCORED_WITH_DIFFERENCES = {k: v for k, v in FIT_DIFFERENCES.items()
                           if all(key.startswith(("model.loss", "model.reference")) for key in v[1])}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    run = fitted_run(tmp_path_factory.mktemp("resume_config"))
    run["ckpt"] = str(run["ckpt"])
    return run


@pytest.mark.parametrize("name", list(FIT_DIFFERENCES))
def test_resume_with_other_settings_is_refused_naming_each_key(name, trained, capsys):
    args, keys = FIT_DIFFERENCES[name]
    before = snapshot(trained["root"] / "run")
    rc, lines = run_cli(["fit", "--config", trained["config"], "--ckpt_path", trained["ckpt"], *args], capsys)
    line = assert_one_line(rc, lines, trained["ckpt"], "--use_checkpoint_config true", *keys)
    assert line.count("(config ") == len(keys), line  # every differing key, and only those
    assert snapshot(trained["root"] / "run") == before


@pytest.mark.parametrize("name", list(EVALUATE_DIFFERENCES))
def test_evaluate_with_another_model_is_refused(name, trained, capsys, tmp_path):
    args, keys = EVALUATE_DIFFERENCES[name]
    rc, lines = run_cli(["evaluate", "--config", trained["config"], "--ckpt_path", trained["ckpt"],
                         "--output_dir", str(tmp_path / "eval"), *args], capsys)
    assert_one_line(rc, lines, trained["ckpt"], *keys)


@pytest.mark.parametrize("name", list(SCORED_WITH_DIFFERENCES))
def test_evaluate_with_another_loss_or_reference_scores_with_it_and_says_so(name, trained, capsys, tmp_path):
    """Scoring a checkpoint against another reference (or loss) is a question, not a mistake: it runs with the
    config's, and one line names each setting that differs from the checkpoint's (never silent)."""
    args, keys = SCORED_WITH_DIFFERENCES[name]
    capsys.readouterr()
    command = ["evaluate", "--config", trained["config"], "--ckpt_path", trained["ckpt"], "--output_dir", str(tmp_path / "eval"), *args]
    if name in NEEDS_TRAINED_STATE:  # a loss / reference with state of its own: the checkpoint has none to give it
        rc, lines = run_cli(command, capsys)
        assert_one_line(rc, [line for line in lines if not line.startswith("[evaluate] scoring")],
                        "does not match the configured module", "missing")
        return
    cli.main(command)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[evaluate] scoring")]
    assert len(said) == 1 and all(key in said[0] for key in keys), said
    assert (tmp_path / "eval" / "results.json").is_file()


NEEDS_TRAINED_STATE = {"epsilon-dpo", "reference class"}  # epsilon-DPO's adaptive beta, a moving reference's counters


def test_evaluate_may_use_other_data_and_a_resume_other_execution_settings(trained, tmp_path):
    """Held-out data and execution knobs (activation checkpointing, chunk size) are not what a checkpoint is."""
    cli.main(["evaluate", "--config", trained["config"], "--ckpt_path", trained["ckpt"], "--data.init_args.batch_size", "2",
              "--output_dir", str(tmp_path / "eval")])
    assert (tmp_path / "eval" / "results.json").is_file()
    cli.main(["fit", "--config", trained["config"], "--ckpt_path", trained["ckpt"], "--model.logps_chunk_size", "16",
              "--model.activation_checkpointing", "true", "--trainer.logger.init_args.save_dir", str(tmp_path),
              # unset and its meaning are the same setting; precision and the step budget are how a run executes
              "--trainer.accumulate_grad_batches", "1", "--trainer.gradient_clip_val", "0", "--trainer.precision", "bf16-mixed",
              "--trainer.max_steps", "3"])


def test_use_checkpoint_config_takes_the_checkpoints_settings(trained, tmp_path):
    cli.main(["fit", "--config", trained["config"], "--ckpt_path", trained["ckpt"], "--use_checkpoint_config", "true",
              "--model.model.init_args.hidden_size", "64", "--model.loss", "lit_align.losses.IPO",
              "--data.init_args.batch_size", "2", "--trainer.accumulate_grad_batches", "3",
              "--trainer.logger.init_args.save_dir", str(tmp_path)])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["trainer"]["accumulate_grad_batches"] == 1
    assert saved["model"]["model"]["init_args"]["hidden_size"] == 32
    assert saved["model"]["loss"]["class_path"] == "lit_align.losses.DPO"
    assert saved["data"]["init_args"]["batch_size"] == 4
    assert "use_checkpoint_config" not in saved  # a rerun from the saved config must opt in again


def test_differences_unit():
    from lit_align.resume_config import differences

    recorded = {"model": {"model": {"class_path": "a.B", "init_args": {"n": 1, "only_in_ckpt": 2}},
                          "loss": {"class_path": "l.DPO", "init_args": {"beta": 0.1}}, "lr": 1e-3, "compile": False}}
    configured = {"model": {"model": {"class_path": "a.B", "init_args": {"n": 1.0, "new_setting": 5}},
                            "loss": {"class_path": "l.IPO", "init_args": {"beta": 0.5}}, "lr": 1e-3, "compile": True}}
    # equal numbers of other types agree; keys of one side only and execution knobs are not compared;
    # another loss class is one difference, its init args not listed
    assert differences(configured, recorded) == ["model.loss (config 'l.IPO', checkpoint 'l.DPO')"]
    configured["model"]["lr"] = 2e-3
    assert differences(configured, recorded, only=("model.model.", "model.loss.")) == ["model.loss (config 'l.IPO', checkpoint 'l.DPO')"]
    assert len(differences(configured, recorded)) == 2


def test_evaluate_with_use_checkpoint_config_evaluates_the_checkpoints_model(trained, tmp_path):
    cli.main(["evaluate", "--config", trained["config"], "--ckpt_path", trained["ckpt"], "--use_checkpoint_config", "true",
              "--model.model.init_args.hidden_size", "64", "--output_dir", str(tmp_path / "eval")])
    saved = yaml.safe_load((tmp_path / "eval" / "config.yaml").read_text())
    assert saved["model"]["model"]["init_args"]["hidden_size"] == 32


@pytest.mark.parametrize("shortcut", ["last", "best", "hpc", "registry", "registry:model:latest"])
@pytest.mark.parametrize("command", ["fit", "evaluate", "validate"])
def test_a_lightning_ckpt_path_shortcut_is_refused_naming_the_file_to_give(shortcut, command, trained, tmp_path, capsys):
    """Lightning resolves `last` only once the run starts: no settings compared, no checksum checked, and with no
    checkpoint found it trained from scratch and exited 0. Even with a checkpoint there and changed settings."""
    where = ["--trainer.logger.init_args.save_dir", str(trained["root"])] if command == "fit" else []
    rc, lines = run_cli([command, "--config", trained["config"], "--ckpt_path", shortcut, "--data.init_args.max_length", "40",
                         *where], capsys)
    assert_one_line(rc, lines, f"ckpt_path '{shortcut}' is a Lightning shortcut", "checkpoints/last.ckpt")
