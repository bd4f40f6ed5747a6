"""Every user-facing error of ``cli.py`` is ONE line on stderr naming the file / row / key / value.

A table of malformed inputs (settings, command-line values, data rows, paths, checkpoints), run
in-process through ``cli.run`` (the entry point) with stderr captured; a few run end to end in a
subprocess, where Lightning's own output is on stderr too. Plus: nothing is silently accepted (a
forced NaN loss stops training with the last checkpoint intact; an evaluation whose judge never
answered exits non-zero with results.json saying complete: false), and the debug switch.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import cli  # imported here, not under capsys: Lightning binds its log handler to the stderr of import time
from tests.test_fit import fit_config

REPO = Path(__file__).resolve().parents[1]
MT = REPO.parent / "shared" / "data" / "mt_bench"

# Lightning's INFO lines (rank_zero_info) that may precede the error line on a real stderr.
INFO_LINES = ("Seed set to", "GPU available", "TPU available", "HPU available", "Loading `train_dataloader`", "Restoring states")


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory) -> dict:
    from benchmarks.demos.sort_task import write_task

    root = tmp_path_factory.mktemp("cli_errors")
    data = write_task(root / "data", train=16, val=8, test=8)
    config = fit_config(root, data, steps=2)
    return {"root": root, "data": data, "config": str(config)}


def run_cli(args: list[str], capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = cli.run([str(a) for a in args])
    return rc, _stderr_error_lines(capsys.readouterr().err)


def assert_one_line(rc: int, lines: list[str], *expected: str, status: int = 1) -> str:
    assert rc == status, (rc, lines)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in line, line
    for text in expected:
        assert text in line, (text, line)
    return line


def write_rows(path: Path, rows: list) -> Path:
    """Rows as jsonl lines (a str is written as it is, bytes too)."""
    raw = b"".join((r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()) + b"\n" for r in rows)
    path.write_bytes(raw)
    return path


GOOD = {"prompt": "sort: 3 1", "chosen": "1 3", "rejected": "3 1"}

# (extra CLI arguments, texts the one line must contain): refused at construction, before any step
SETTINGS = {
    "lr<0": (["--model.lr", "-1"], ["lr must be", "-1"]),
    "warmup<0": (["--model.warmup_steps", "-5"], ["warmup_steps", "-5"]),
    "warmup 2.5": (["--model.warmup_steps", "2.5"], ["warmup_steps", "2.5"]),
    "weight_decay<0": (["--model.weight_decay", "-0.1"], ["weight_decay", "-0.1"]),
    "adam beta2>=1": (["--model.betas", "[0.9, 1.5]"], ["betas[1]", "1.5"]),
    "min_lr_ratio>1": (["--model.min_lr_ratio", "2"], ["min_lr_ratio", "2"]),
    "chunk 0": (["--model.logps_chunk_size", "0"], ["logps_chunk_size", "0"]),
    "batch_size 0": (["--data.init_args.batch_size", "0"], ["PreferenceDataModule", "batch_size", "got 0"]),
    "batch_size<0": (["--data.init_args.batch_size", "-3"], ["batch_size", "-3"]),
    "eval_batch_size 0": (["--data.init_args.eval_batch_size", "0"], ["eval_batch_size", "got 0"]),
    "max_length<max_prompt_length": (["--data.init_args.max_length", "32"], ["max_prompt_length (48)", "max_length (32)"]),
    "val_fraction>1": (["--data.init_args.val_path", "null", "--data.init_args.val_fraction", "1.5"], ["val_fraction", "1.5"]),
    "val_fraction<0": (["--data.init_args.val_path", "null", "--data.init_args.val_fraction", "-0.2"], ["val_fraction", "-0.2"]),
    "val_fraction 1": (["--data.init_args.val_path", "null", "--data.init_args.val_fraction", "1"], ["val_fraction", "< 1"]),
    "val_fraction and val_path": (["--data.init_args.val_fraction", "0.2"], ["val_path", "val_fraction", "not both"]),
    "beta 0": (["--model.loss.init_args.beta", "0"], ["lit_align.losses.DPO", "beta must be > 0", "0"]),
    "label_smoothing 0.7": (["--model.loss.init_args.label_smoothing", "0.7"], ["label_smoothing", "0.7"]),
    "ema alpha 1.5": (["--model.reference", "lit_align.reference.EMAReference", "--model.reference.init_args.alpha", "1.5"], ["alpha", "1.5"]),
    "ema tau 0": (["--model.reference", "lit_align.reference.EMAReference", "--model.reference.init_args.tau", "0"], ["tau", "0"]),
    "DPO without reference": (["--model.reference", "lit_align.reference.NoReference"], ["DPO needs reference log-probs", "NoReference"]),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_bad_setting_is_one_line_naming_it(name, case_dir, capsys):
    args, expected = SETTINGS[name]
    rc, lines = run_cli(["fit", "--config", case_dir["config"], *args], capsys)
    assert_one_line(rc, lines, *expected)


# refused by the parser (exit status 2), still one line naming the key and value
PARSE = {
    "lr not a number": (["--model.lr", "abc"], ['"model.lr"', "abc", "--help"]),
    "lr nan": (["--model.lr", "nan"], ['"model.lr"', "nan"]),
    "max_epochs not an int": (["--trainer.max_epochs", "abc"], ['"trainer.max_epochs"', "abc"]),
    "unknown key": (["--model.lrr", "1"], ["--model.lrr"]),
    "bad schedule": (["--model.schedule", "cosin"], ["model.schedule", "cosin"]),
}


@pytest.mark.parametrize("name", list(PARSE))
def test_parse_error_is_one_line(name, case_dir, capsys):
    args, expected = PARSE[name]
    rc, lines = run_cli(["fit", "--config", case_dir["config"], *args], capsys)
    assert_one_line(rc, lines, *expected, status=2)


def test_missing_config_file_is_one_line(tmp_path, capsys):
    rc, lines = run_cli(["fit", "--config", tmp_path / "nope.yaml"], capsys)
    assert_one_line(rc, lines, "nope.yaml", status=2)


def test_help_still_works(capsys):
    import cli

    with pytest.raises(SystemExit) as exit_:
        cli.run(["fit", "--help"])
    assert exit_.value.code == 0 and "--model.lr" in capsys.readouterr().out


def test_missing_model_directory_says_so(case_dir, tmp_path, capsys):
    missing = tmp_path / "no" / "such_model"
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--model.model", "lit_align.models.PretrainedModel",
                         "--model.model.path", missing], capsys)
    line = assert_one_line(rc, lines, str(missing), "no such directory")
    assert "Repo id" not in line
    (tmp_path / "empty").mkdir()
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--model.model", "lit_align.models.PretrainedModel",
                         "--model.model.path", tmp_path / "empty"], capsys)
    assert_one_line(rc, lines, str(tmp_path / "empty"), "cannot load this folder")


def test_fit_ckpt_path_missing_or_not_a_checkpoint(case_dir, tmp_path, capsys):
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--ckpt_path", tmp_path / "gone.ckpt"], capsys)
    assert_one_line(rc, lines, str(tmp_path / "gone.ckpt"), "no such file")
    jsonl = case_dir["data"]["train"]
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--ckpt_path", jsonl], capsys)
    assert_one_line(rc, lines, str(jsonl), "not a PyTorch checkpoint")


def test_missing_train_file(case_dir, tmp_path, capsys):
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--data.init_args.train_path", tmp_path / "nope.jsonl"], capsys)
    assert_one_line(rc, lines, str(tmp_path / "nope.jsonl"), "no such file")


NAN = '{"prompt": "a", "chosen": "b", "rejected": "c", "ref_chosen_logps": NaN, "ref_rejected_logps": -3.0}'
INF = '{"prompt": "a", "chosen": "b", "rejected": "c", "ref_chosen_logps": -2.0, "ref_rejected_logps": -Infinity}'

# (the third row of train.jsonl, texts the line must contain besides "train.jsonl:3")
ROWS = {
    "non-UTF-8 byte": (b'{"prompt": "a", "chosen": "b\xff", "rejected": "c"}', ["not valid UTF-8", "0xff", "byte column 29"]),
    "JSON cut short": ('{"prompt": "a", "chosen": "b"', ["invalid JSON", "at end of line"]),
    "JSON bad column": ('{"prompt": "a",, "chosen": "b"}', ["invalid JSON", "at column 16"]),
    "null field": ({"prompt": "a", "chosen": "b", "rejected": None}, ["field 'rejected' is null"]),
    "missing field": ({"prompt": "a", "chosen": "b"}, ["missing field 'rejected'", "auto-detected as explicit"]),
    "typo guesses implicit": ({"promt": "a", "chosen": "b", "rejected": "c"}, ["auto-detected as implicit", "no 'prompt' key"]),
    "wrong type": ({"prompt": "a", "chosen": 3, "rejected": "c"}, ["field 'chosen' must be a string, got int"]),
    "NaN ref logps": (NAN, ["ref_chosen_logps", "finite", "nan"]),
    "inf ref logps": (INF, ["ref_rejected_logps", "finite", "inf"]),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_row_is_one_line_naming_file_line_and_field(name, case_dir, tmp_path, capsys):
    row, expected = ROWS[name]
    extra = {"ref_chosen_logps": -1.0, "ref_rejected_logps": -2.0} if "logps" in name else {}
    train = write_rows(tmp_path / "train.jsonl", [GOOD | extra, GOOD | extra, row])
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--data.init_args.train_path", train], capsys)
    assert_one_line(rc, lines, f"{train}:3", *expected)


def test_non_utf8_in_a_json_file_names_its_line(case_dir, tmp_path, capsys):
    train = tmp_path / "train.json"
    train.write_bytes(b'[\n{"prompt": "a", "chosen": "b", "rejected": "c"},\n{"prompt": "\xe9"}\n]')
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--data.init_args.train_path", train], capsys)
    assert_one_line(rc, lines, f"{train}:3", "not valid UTF-8", "0xe9")


def test_every_pair_truncated_away_says_raise_max_length(case_dir, capsys):
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--data.init_args.max_length", "8",
                         "--data.init_args.max_prompt_length", "8"], capsys)
    assert_one_line(rc, lines, "train.jsonl", "no usable preference pairs", "raise max_length")


def test_evaluate_ckpt_path_not_a_checkpoint(case_dir, tmp_path, capsys):
    for path, text in ((case_dir["data"]["train"], "not a PyTorch checkpoint"), (tmp_path / "gone.ckpt", "no such file"),
                       (tmp_path, "neither a sharded checkpoint")):
        rc, lines = run_cli(["evaluate", "--config", case_dir["config"], "--ckpt_path", path], capsys)
        assert_one_line(rc, lines, f"ckpt_path {path}", text)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    rc, lines = run_cli(["evaluate", "--config", case_dir["config"], "--ckpt_path", tmp_path / "plain.pt"], capsys)
    assert_one_line(rc, lines, str(tmp_path / "plain.pt"), "no 'state_dict'")


def test_debug_switch_shows_the_traceback(case_dir, capsys, monkeypatch):
    import cli
    from lit_align.errors import ConfigError

    monkeypatch.setenv(cli.DEBUG_ENV, "0")  # recorded, so the "1" that --debug sets is undone after the test
    with pytest.raises(ConfigError, match="lr must be"):
        cli.run(["fit", "--config", case_dir["config"], "--model.lr", "-1", "--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="batch_size"):  # as jsonargparse raised it
        cli.run(["fit", "--config", case_dir["config"], "--data.init_args.batch_size", "0"])


def test_a_bug_keeps_its_traceback_a_library_value_error_names_its_origin(monkeypatch, capsys):
    import cli

    def broken(args):
        raise TypeError("a bug")

    monkeypatch.setattr(cli, "main", broken)
    with pytest.raises(TypeError):
        cli.run(["fit"])

    def library(args):
        int("x")

    monkeypatch.setattr(cli, "main", library)
    rc, lines = run_cli(["fit"], capsys)
    assert_one_line(rc, lines, "ValueError: invalid literal", "test_cli_errors.py", cli.DEBUG_ENV)


def test_nan_loss_stops_before_the_step_and_last_checkpoint_is_intact(case_dir, tmp_path, capsys):
    """A loss made NaN on the 3rd training batch: exit 1, one line naming the step; last.ckpt = weights after 2 steps."""
    from tests.helpers_errors import SNAPSHOTS

    config = yaml.safe_load(Path(case_dir["config"]).read_text())
    config["model"]["loss"] = {"class_path": "tests.helpers_errors.NaNAtStep", "init_args": {"at_call": 2}}
    config["trainer"].update(limit_train_batches=4, log_every_n_steps=1, callbacks=[
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(tmp_path / "ckpts"), "every_n_train_steps": 1, "save_last": True, "save_top_k": 0}},
        {"class_path": "tests.helpers_errors.RecordWeights"},
    ])
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path)
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(config))
    rc, lines = run_cli(["fit", "--config", path], capsys)
    assert_one_line(rc, lines, "non-finite training loss at global step 2", "NaNAtStep", "loss nan")

    checkpoint = torch.load(tmp_path / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2 and sorted(SNAPSHOTS) == [0, 1, 2]  # no step applied the NaN
    saved = {k.removeprefix("policy."): v for k, v in checkpoint["state_dict"].items() if k.startswith("policy.")}
    assert saved.keys() == SNAPSHOTS[2].keys()
    assert all(torch.equal(saved[k], SNAPSHOTS[2][k]) for k in saved)  # exactly the weights after step 2
    assert any(not torch.equal(SNAPSHOTS[2][k], SNAPSHOTS[1][k]) for k in saved)  # (which step 2 did change)
    assert all(torch.isfinite(v).all() for v in saved.values())

    from lit_align.models import TinyModel
    from lit_align.module import PreferenceModule

    module = PreferenceModule(model=TinyModel(hidden_size=32, num_layers=1, num_heads=2))
    module.configure_model()
    module.load_state_dict(checkpoint["state_dict"])  # loads into a freshly built module


def _judge_task(url: str) -> dict:
    return {"class_path": "evals.mt_bench.MTBench", "init_args": {
        "question_file": str(MT / "question.jsonl"), "limit": 1, "max_new_tokens": 2, "use_vllm": False,
        "reference_file": str(MT / "reference_answer" / "gpt-4.jsonl"),
        "judge": {"class_path": "evals.judge.JudgeClient", "init_args": {
            "model": "judge-x", "base_url": url, "api_key_env": "FAKE_JUDGE_KEY", "timeout": 5, "max_retries": 1,
            "backoff_base": 0.01, "backoff_max": 0.02}}}}


def test_evaluate_whose_judge_never_answers_fails(case_dir, tmp_path, capsys, monkeypatch):
    from tests.evals_support.fake_openai import FakeOpenAIServer

    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test")
    out = tmp_path / "eval"
    with FakeOpenAIServer(fault=lambda body, n: ("status", 500)) as server:
        tasks = tmp_path / "tasks.yaml"
        tasks.write_text(yaml.safe_dump({"tasks": [_judge_task(server.base_url)]}))
        rc, lines = run_cli(["evaluate", "--config", case_dir["config"], "--config", tasks, "--output_dir", out], capsys)
    assert_one_line(rc, lines, "evaluation incomplete", "mt_bench", "did not answer 2 of 2", "HTTP 500", "complete: false")
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is False
    assert "did not answer 2 of 2" in results["failed"]["mt_bench"]["reason"]
    assert not any(k.startswith("mt_bench/") for k in results["metrics"])  # no score presented as a result
    assert "score" not in results["failed"]["mt_bench"]["metrics"]  # the NaN is not even kept as a partial
    assert results["failed"]["mt_bench"]["metrics"]["judge_failures"] == 2
    assert all(math.isfinite(v) for v in results["metrics"].values() if isinstance(v, float))  # val metrics still there


def test_run_suite_records_failed_and_undefined_metrics(tmp_path):
    from evals import run_suite
    from evals.base import EvalTask, TaskFailed

    class Fails(EvalTask):
        name = "fails"

        def run(self, model, tokenizer, output_dir):
            raise TaskFailed("judge down", {"n": 3, "score": float("nan")})

    class Partial(EvalTask):
        name = "partial"

        def run(self, model, tokenizer, output_dir):
            return {"score": 0.5, "category/x": float("nan")}

    results = run_suite(torch.nn.Linear(1, 1), None, [Partial(), Fails()], tmp_path)
    on_disk = json.loads((tmp_path / "results.json").read_text())  # strict JSON: no NaN written
    assert on_disk == json.loads(json.dumps(results)) and results["complete"] is False
    assert results["metrics"] == {"partial/score": 0.5} and results["undefined"] == {"partial": ["category/x"]}
    assert results["failed"] == {"fails": {"reason": "judge down", "metrics": {"n": 3}}}


def _stderr_error_lines(stderr: str) -> list[str]:
    """stderr's lines less Lightning's INFO lines (which are not errors) and blank ones."""
    return [line for line in stderr.splitlines() if line.strip() and not line.removeprefix("INFO: ").startswith(INFO_LINES)]


@pytest.mark.parametrize("case", ["bad row", "parse error"])
def test_end_to_end_stderr_is_one_line(case, case_dir, tmp_path):
    if case == "bad row":
        train = write_rows(tmp_path / "train.jsonl", [GOOD, {"prompt": "a", "chosen": "b", "rejected": None}])
        args, expected, status = ["--data.init_args.train_path", str(train)], f"{train}:2: field 'rejected' is null", 1
    else:
        args, expected, status = ["--model.warmup_steps", "many"], '"model.warmup_steps"', 2
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("LIT_ALIGN_DEBUG", None)
    fresh_logs = ["--trainer.logger.init_args.save_dir", str(tmp_path)]  # (an earlier run's logs would draw a warning)
    proc = subprocess.run([sys.executable, "cli.py", "fit", "--config", case_dir["config"], *fresh_logs, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = _stderr_error_lines(proc.stderr)
    assert proc.returncode == status and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr


def test_non_utf8_row_is_skipped_like_any_bad_row(tmp_path, tokenizer):
    from lit_align.data import PreferenceDataModule

    train = write_rows(tmp_path / "train.jsonl", [GOOD, b'{"prompt": "\xff"}', GOOD])
    data = PreferenceDataModule(train_path=str(train), on_bad_row="skip")
    data._tokenizer = lambda: tokenizer
    data.setup("fit")
    assert len(data.train_set) == 2 and data.counts["train"]["bad_rows_skipped"] == 1
