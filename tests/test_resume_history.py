"""A resumed fit keeps the history logged before its checkpoint (lit_align.run_history).

A 10-step run writes a checkpoint at every step; resuming it from its step-4 checkpoint (the
run directory holding the whole run's metrics.csv, as after a crash late in the run) must leave
metrics.csv identical to the uninterrupted run's (but for the host-clock columns, tokens/s and MFU): rows of steps 0-3 kept, rows of steps
4-9 dropped and logged again by the resumed run (training resumes bit-exactly). The kill / resume
test (tests/test_kill_resume.py, slow) checks the same after a real SIGKILL.
"""

from __future__ import annotations

import shutil

import pytest

import cli


def test_resume_keeps_rows_before_the_checkpoint_and_replaces_those_after(tmp_path):
    from benchmarks.demos.sort_task import write_task
    from tests.test_kill_resume import CASES, STEPS, logged_history, write_config

    data = write_task(tmp_path / "data", train=64, val=8, test=8)
    config = str(write_config(tmp_path, "run", data, *CASES["frozen"]))  # the kill / resume test's run (resumes bit-exactly)
    cli.main(["fit", "--config", config, "--checkpoint.save_top_k", "-1"])
    run = tmp_path / "run"
    uninterrupted = logged_history(run)
    assert [row.split(",")[1] for row in uninterrupted.splitlines()[1:]] == [str(s) for s in range(STEPS)]  # (epoch, step, ...)
    (step4,) = (run / "checkpoints").glob("*step=4.ckpt")
    shutil.copy(step4, tmp_path / "step4.ckpt")
    (tmp_path / "step4.ckpt.sha256").write_text(step4.with_name(step4.name + ".sha256").read_text().replace(step4.name, "step4.ckpt"))

    cli.main(["fit", "--config", config, "--checkpoint.save_top_k", "-1", "--ckpt_path", str(tmp_path / "step4.ckpt")])
    assert logged_history(run) == uninterrupted  # train/tokens included: the monitor's count resumes too


@pytest.mark.parametrize("step, kept", [(0, [""]), (1, ["0", ""]), (3, ["0", "1", "2", ""]), (9, ["0", "1", "2", "3", ""])])
def test_rows_before_keeps_earlier_steps_and_rows_without_one(step, kept):
    from lit_align.run_history import rows_before

    lines = ["epoch,step,train/loss\n"] + [f"0,{s},0.{s}\n" for s in range(4)] + ["0,,0.5\n"]
    out = rows_before(lines, step)
    assert out[0] == lines[0] and [line.split(",")[1] for line in out[1:]] == kept
