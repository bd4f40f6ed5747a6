"""Nothing a fit wrote is lost: evaluate writes elsewhere, a second fit refuses, checkpoint writes are atomic.

The run-directory rules are lit_align.run_dirs; the atomic writer is lit_align.checkpoint_io.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_fit import fit_config

REPO = Path(__file__).resolve().parents[1]


def snapshot(run: Path) -> dict[str, str]:
    """sha256 of every file of the run directory, its evaluations (eval/, validate/) left out."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.relative_to(run).parts[0] not in ("eval", "validate")}


def test_evaluate_with_the_fits_config_leaves_the_fit_untouched_and_keeps_both_results(tmp_path, sort_task):
    """README's form ``evaluate --config <run>/config.yaml``: the fit's config.yaml, hparams.yaml,
    metrics.csv, checkpoints and export stay byte-identical; each evaluation gets its own folder."""
    import cli

    cli.main(["fit", "--config", str(fit_config(tmp_path, sort_task, steps=2))])
    run = tmp_path / "run"
    before = snapshot(run)
    assert {"config.yaml", "hparams.yaml", "metrics.csv", "checkpoints/last.ckpt", "hf/model.safetensors"} <= set(before)
    for _ in range(2):
        cli.main(["evaluate", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert snapshot(run) == before
    results = [json.loads((run / "eval" / f"version_{i}" / "results.json").read_text()) for i in (0, 1)]
    assert all(r["complete"] and "val/loss" in r["metrics"] for r in results)
    assert results[0]["metrics"] == results[1]["metrics"]
    for i in (0, 1):  # the evaluation's own config and logs sit beside its results
        assert (run / "eval" / f"version_{i}" / "config.yaml").is_file()
        assert (run / "eval" / f"version_{i}" / "metrics.csv").is_file()

    cli.main(["validate", "--config", str(run / "config.yaml")])  # validate (test, predict) alike
    assert snapshot(run) == before and "val/loss" in (run / "validate" / "version_0" / "metrics.csv").read_text()

    with pytest.raises(ValueError, match="a fit's run directory"):  # --output_dir may not point at the run itself
        cli.main(["evaluate", "--config", str(run / "config.yaml"), "--output_dir", str(run)])
    assert snapshot(run) == before


def test_a_second_fit_into_the_same_run_directory_stops_unless_resuming_or_told_to_overwrite(tmp_path, sort_task):
    import cli

    config = str(fit_config(tmp_path, sort_task, steps=2))
    cli.main(["fit", "--config", config])
    run = tmp_path / "run"
    before = snapshot(run)
    with pytest.raises(ValueError, match=r"already holds a run \(config.yaml, hparams.yaml, metrics.csv, checkpoints, hf\)"):
        cli.main(["fit", "--config", config, "--model.lr", "0.5"])
    assert snapshot(run) == before
    saved = (run / "config.yaml").read_text()
    assert "overwrite" not in saved  # a rerun from the saved config must opt in again
    cli.main(["fit", "--config", config, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])  # resuming: allowed
    cli.main(["fit", "--config", config, "--model.lr", "0.5", "--overwrite", "true"])
    assert "lr: 0.5" in (run / "config.yaml").read_text()


def test_auto_numbered_run_records_its_version_so_evaluate_finds_it(tmp_path, sort_task):
    """A fit with ``version: null`` (version_0, version_1 ...) saves its number in config.yaml;
    evaluate --config then writes under that run, not under the next free version."""
    import yaml

    import cli

    path = fit_config(tmp_path, sort_task, steps=1)
    config = yaml.safe_load(path.read_text())
    config["trainer"]["logger"]["init_args"]["version"] = None
    path.write_text(yaml.safe_dump(config))
    cli.main(["fit", "--config", str(path)])
    run = tmp_path / "run" / "version_0"
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["logger"]["init_args"]["version"] == 0
    cli.main(["evaluate", "--config", str(run / "config.yaml")])
    assert (run / "eval" / "version_0" / "results.json").is_file()


KILL_DURING_SAVE = r"""
import resource, signal, sys, torch
from lit_align.checkpoint_io import AtomicCheckpointIO
from lit_align.trainer import AlignTrainer

io = AlignTrainer(accelerator="cpu", logger=False, enable_progress_bar=False).strategy.checkpoint_io
assert type(io) is AtomicCheckpointIO, type(io)
path = sys.argv[1]
io.save_checkpoint({"w": torch.zeros(250_000), "step": 1}, path)
# the next write is cut off by the kernel half-way: SIGXFSZ (Python ignores it; restored here) kills the process
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, resource.RLIM_INFINITY))
io.save_checkpoint({"w": torch.ones(250_000), "step": 2}, path)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="POSIX file-size limits")
def test_a_process_killed_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    """AlignTrainer's checkpoint writer, killed half-way through rewriting last.ckpt: the previous
    last.ckpt is still there, whole. The partial file was staged beside the target (so the final
    rename is atomic), not in $TMPDIR, from where Lightning's default writer copies the file over the
    target when $TMPDIR is another filesystem (tmpfs, node-local scratch): a kill then truncates it."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    staging = tmp_path / "tmpdir"
    staging.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(staging)}
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr[-3000:]
    checkpoint = torch.load(path)
    assert checkpoint["step"] == 1 and torch.equal(checkpoint["w"], torch.zeros(250_000))
    assert [p for p in staging.rglob("*") if p.is_file()] == []  # (torch may make an empty torchinductor folder)
    from lit_align.checkpoint_files import verify_checksum

    verify_checksum(path)  # its checksum file still describes it
    (partial,) = [p for p in path.parent.iterdir() if p.name not in ("last.ckpt", "last.ckpt.sha256")]
    assert partial.name.startswith(".last.ckpt.tmp") and partial.stat().st_size == 500_000
    # the interrupted temporary file is cleared by the next successful save
    from lit_align.checkpoint_io import AtomicCheckpointIO

    AtomicCheckpointIO().save_checkpoint({"step": 3}, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]
    assert torch.load(path)["step"] == 3


def test_checkpoint_hyper_parameters_carry_no_credentials(tmp_path):
    from lit_align.checkpoint_io import AtomicCheckpointIO

    path = tmp_path / "x.ckpt"
    AtomicCheckpointIO().save_checkpoint({"hyper_parameters": {"url": "http://u:PLANTED-KEY-1@h/v1", "n": 1, "api_key": "PLANTED2"},
                                          "state_dict": {}}, path)
    assert b"PLANTED" not in path.read_bytes()
    assert torch.load(path)["hyper_parameters"] == {"url": "http://***@h/v1", "n": 1, "api_key": None}


def test_logged_hyper_parameters_carry_no_credentials(tmp_path):
    """hparams.yaml is written from ``hparams_initial``; the CLI masks both records after building."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from lit_align.checkpoint_io import redact_hyperparameters

    class Module(L.LightningModule):
        def __init__(self, source: str = "", n: int = 1) -> None:
            super().__init__()
            self.save_hyperparameters()

    module = Module(source="https://u:PLANTED-KEY-3@h/model")
    redact_hyperparameters(module, None)
    logger = CSVLogger(tmp_path, name="", version="")
    logger.log_hyperparams(module.hparams_initial)
    logger.save()
    assert "PLANTED" not in (tmp_path / "hparams.yaml").read_text()
    assert module.hparams == {"source": "https://***@h/model", "n": 1}


def test_a_run_directory_without_a_checkpoint_is_not_protected(tmp_path, sort_task):
    """A fit that failed after writing config.yaml (and perhaps hparams.yaml / metrics.csv) left nothing to
    resume: the corrected rerun proceeds (with a warning), and never suggests a last.ckpt that does not exist."""
    import cli

    config = str(fit_config(tmp_path, sort_task, steps=1))
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "hparams.yaml", "metrics.csv"):
        (run / name).write_text("left by a failed start\n")
    (run / "checkpoints").mkdir()  # created, never written to
    with pytest.warns(UserWarning, match="left no checkpoint"):
        cli.main(["fit", "--config", config])
    assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("kept", ["epoch=0-step=1.ckpt", "hf"])
def test_the_refusal_suggests_only_a_checkpoint_that_exists(kept, tmp_path, sort_task):
    import shutil

    import cli

    config = str(fit_config(tmp_path, sort_task, steps=1))
    cli.main(["fit", "--config", config])
    run = tmp_path / "run"
    if kept == "hf":
        shutil.rmtree(run / "checkpoints")
    else:
        (run / "checkpoints" / "last.ckpt").rename(run / "checkpoints" / kept)
    with pytest.raises(ValueError, match="already holds a run") as refused:
        cli.main(["fit", "--config", config])
    message = str(refused.value)
    assert "last.ckpt" not in message
    assert (f"--ckpt_path {run / 'checkpoints' / kept}" in message) == (kept != "hf")


def test_a_second_fit_into_a_claimed_directory_stops_and_a_killed_claim_is_no_claim(tmp_path, sort_task):
    """Two fits started at once: the second finds the first's claim (held here by the test as a running fit
    would) and stops in one line naming its pid; a claim whose process was SIGKILLed does not block."""
    import cli
    from lit_align.run_dirs import RunDirLock

    config = str(fit_config(tmp_path, sort_task, steps=1))
    run = tmp_path / "run"
    claim = RunDirLock(run).acquire()
    try:
        with pytest.raises(ValueError, match=f"{run} is being written by another fit \\(pid {os.getpid()}"):
            cli.main(["fit", "--config", config])
        assert not (run / "config.yaml").exists()
        with pytest.raises(ValueError, match="another fit"):  # the claim holds within one process too
            RunDirLock(run).acquire()
    finally:
        claim.release()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from lit_align.run_dirs import RunDirLock; "
                               "RunDirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)", str(run)],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=f"pid {holder.pid}"):
            RunDirLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    cli.main(["fit", "--config", config])  # the killed holder's claim went with it
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not list(tmp_path.glob(".run.fit.lock"))  # released at the end of the fit


def test_claims_race(tmp_path):
    """Many processes claim one directory at the same moment: exactly one gets it."""
    script = ("import sys, time; from lit_align.run_dirs import RunDirLock\n"
              "while time.time() < float(sys.argv[2]): pass\n"
              "try:\n    RunDirLock(sys.argv[1]).acquire(); print('won', flush=True); time.sleep(3)\n"
              "except ValueError:\n    print('lost', flush=True)\n")
    import time

    start = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "run"), start], env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outcomes == ["lost"] * 5 + ["won"], outcomes


def test_overwrite_replaces_the_checkpoints_so_last_ckpt_is_the_new_run(tmp_path, sort_task):
    """``--overwrite true`` used to leave the old last.ckpt (the new run saved last-v1.ckpt beside it), so
    ``--ckpt_path .../last.ckpt`` resumed or evaluated the replaced run's weights."""
    import cli

    config = str(fit_config(tmp_path, sort_task, steps=2))
    cli.main(["fit", "--config", config])
    run = tmp_path / "run"
    old = hashlib.sha256((run / "checkpoints" / "last.ckpt").read_bytes()).hexdigest()
    cli.main(["fit", "--config", config, "--model.lr", "0.5", "--overwrite", "true"])
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == ["last.ckpt"]
    new = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert hashlib.sha256((run / "checkpoints" / "last.ckpt").read_bytes()).hexdigest() != old
    assert new["hyper_parameters"]["lr"] == 0.5
