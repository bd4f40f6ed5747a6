"""Faults a hostile rerun of issue 17 found outside the listed examples: an lr so large the optimizer's own
arithmetic overflows, and a path the run must write to that is a file, read-only or not permitted."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import cli  # (before capsys: Lightning binds its log handler to the stderr of import time)
from tests.test_cli_errors import assert_one_line, case_dir, run_cli  # noqa: F401


@pytest.mark.parametrize("optimizer", ["torch.optim.AdamW", "torch.optim.Adam"])
def test_an_lr_beyond_float_range_in_the_step_is_one_line_and_writes_no_result(optimizer, case_dir, tmp_path, capsys):  # noqa: F811
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--model.lr", "1e38", "--model.optimizer", optimizer,
                         "--trainer.logger.init_args.save_dir", tmp_path], capsys)
    assert_one_line(rc, lines, "the optimizer step at global step 0 overflowed", "model.lr 1e+38", "Lower model.lr")
    assert not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("*.ckpt"))  # nothing exported or saved


@pytest.mark.parametrize("code", sorted(cli.PATH_ERRNOS))
def test_an_oserror_about_a_path_is_one_line_naming_it(code):
    err = OSError(code, os.strerror(code), "/some/run/checkpoints/.last.ckpt.tmp1")
    line = cli.describe_error(err)
    assert line.startswith("error: cannot use /some/run/checkpoints/.last.ckpt.tmp1: ") and os.strerror(code) in line, line
    assert "raised at" not in line and "\n" not in line


def test_an_oserror_without_a_path_keeps_its_origin():
    try:
        raise OSError(errno.EACCES, "Permission denied")
    except OSError as err:
        line = cli.describe_error(err)
    assert "cannot use" not in line and "raised at" in line  # nothing to name: where it came from is the best lead


def test_a_checkpoint_folder_that_is_a_file_is_one_line(case_dir, tmp_path, capsys):  # noqa: F811
    blocker = tmp_path / "ckpts"
    blocker.write_text("not a folder\n")
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--checkpoint.dirpath", blocker,
                         "--trainer.logger.init_args.save_dir", tmp_path / "runs"], capsys)
    assert_one_line(rc, lines, f"cannot use {blocker}/", "Not a directory", f"a folder the run writes to: {blocker}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through a read-only mode")
def test_a_read_only_run_folder_is_one_line(case_dir, tmp_path, capsys):  # noqa: F811
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        rc, lines = run_cli(["fit", "--config", case_dir["config"], "--trainer.logger.init_args.save_dir", runs], capsys)
    finally:
        runs.chmod(0o755)
    assert_one_line(rc, lines, f"cannot use {runs}", "Permission denied")


SECRET = "Zq7SECRETk3yW9xv"


@pytest.mark.parametrize("url", [f"https://example.invalid/t.jsonl?subscription-key={SECRET}",
                                 f"https://example.invalid/t.jsonl?x=1&sig={SECRET}", f"https://example.invalid/t.jsonl#{SECRET}",
                                 f"https://user:{SECRET}@example.invalid/t.jsonl"], ids=["query", "second query", "fragment", "userinfo"])
@pytest.mark.parametrize("key", ["train_path", "val_path"])
def test_a_data_path_with_a_key_is_one_line_masked(url, key, case_dir, tmp_path, capsys):  # noqa: F811
    """The data module's refusal stays one line naming the class (the masking used to drop it for a
    ValueError holding the whole Union error) and the key appears nowhere."""
    capsys.readouterr()
    rc = cli.run(["fit", "--config", case_dir["config"], f"--data.init_args.{key}", url,
                  "--trainer.logger.init_args.save_dir", str(tmp_path)])
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert rc == 1 and len(lines) == 1, (rc, out.err[-2000:])
    assert lines[0].startswith("error: lit_align.data.PreferenceDataModule: ") and "no such file" in lines[0], lines
    assert "Union" not in lines[0] and "ValueError" not in lines[0], lines
    assert SECRET not in out.err + out.out
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
