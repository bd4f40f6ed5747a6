"""Checkpoint files are verified and loaded without running code (lit_align.checkpoint_files).

Flipped bytes anywhere in last.ckpt are refused by resume and evaluate, naming the file; a pickle
whose ``__reduce__`` runs a command is refused without running it, even with a matching checksum
file; a foreign ``torch.save`` dict is one line; a checkpoint without a checksum file loads with a
warning (refused under LIT_ALIGN_REQUIRE_CHECKSUM=1); a full disk during a save (a patched write, and
a real 200 KB tmpfs where the tests run as root) is one line naming the directory, the previous
checkpoint intact.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import cli
from lit_align.checkpoint_files import checksum_path, file_digest, verify_checksum
from lit_align.checkpoint_io import save_atomic
from tests.test_cli_errors import assert_one_line, run_cli
from tests.test_fit import fitted_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    run = fitted_run(tmp_path_factory.mktemp("ckpt_files"))
    return run


def copy_checkpoint(trained: dict, tmp_path: Path) -> Path:
    target = tmp_path / "copy" / "last.ckpt"
    target.parent.mkdir(parents=True)
    shutil.copy(trained["ckpt"], target)
    shutil.copy(checksum_path(trained["ckpt"]), checksum_path(target))
    return target


def test_the_checksum_file_is_written_with_the_checkpoint_and_describes_it(trained):
    sums = checksum_path(trained["ckpt"]).read_text()
    assert sums == f"{file_digest(trained['ckpt'])}  last.ckpt\n"  # sha256sum's format: `sha256sum -c` checks it


@pytest.mark.parametrize("where", [0.0, 0.01, 0.2, 0.5, 0.8, 0.999])
@pytest.mark.parametrize("command", ["fit", "evaluate"])
def test_flipped_bytes_anywhere_are_refused_naming_the_file(where, command, trained, tmp_path, capsys):
    ckpt = copy_checkpoint(trained, tmp_path)
    data = bytearray(ckpt.read_bytes())
    start = min(int(len(data) * where), len(data) - 400)
    data[start:start + 400] = bytes(b ^ 0x5A for b in data[start:start + 400])  # 400 flipped bytes
    ckpt.write_bytes(bytes(data))
    args = ["--trainer.logger.init_args.save_dir", str(tmp_path)] if command == "fit" else ["--output_dir", str(tmp_path / "e")]
    rc, lines = run_cli([command, "--config", trained["config"], "--ckpt_path", str(ckpt), *args], capsys)
    assert_one_line(rc, lines, f"{ckpt} is corrupted", "last.ckpt.sha256")


def test_library_resume_verifies_too(trained, tmp_path):
    """Trainer.fit(ckpt_path=...) through AlignTrainer's checkpoint IO, not only the CLI's parse step."""
    from lit_align.checkpoint_files import CheckpointFileError
    from lit_align.checkpoint_io import AtomicCheckpointIO

    ckpt = copy_checkpoint(trained, tmp_path)
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 1  # one bit
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointFileError, match="is corrupted"):
        AtomicCheckpointIO().load_checkpoint(str(ckpt))


class Planted:
    """Pickles as a call of os.system: loading it with weights_only=False would run the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("command", ["fit", "evaluate"])
def test_a_pickle_that_runs_code_is_refused_without_running_it(command, trained, tmp_path, capsys):
    checkpoint = torch.load(trained["ckpt"], weights_only=True)
    marker = tmp_path / "PWNED"
    checkpoint["hyper_parameters"]["planted"] = Planted(marker)
    ckpt = tmp_path / "evil.ckpt"
    save_atomic(checkpoint, ckpt)  # with a matching checksum file: the attacker ships one too
    verify_checksum(ckpt)
    args = ["--trainer.logger.init_args.save_dir", str(tmp_path)] if command == "fit" else ["--output_dir", str(tmp_path / "e")]
    rc, lines = run_cli([command, "--config", trained["config"], "--ckpt_path", str(ckpt), *args], capsys)
    assert_one_line(rc, lines, str(ckpt), "could run code", "weights_only=True")
    assert not marker.exists()
    torch.load(ckpt, weights_only=False)  # the planted command is real: a trusting load runs it
    assert marker.exists()


@pytest.mark.parametrize("content", [{"weights": torch.ones(3)}, {"state_dict": {"w": torch.ones(3)}}, [torch.ones(2)]])
@pytest.mark.parametrize("command", ["fit", "evaluate"])
def test_a_foreign_torch_file_is_one_line(content, command, trained, tmp_path, capsys):
    ckpt = tmp_path / "foreign.pt"
    torch.save(content, ckpt)
    args = ["--trainer.logger.init_args.save_dir", str(tmp_path)] if command == "fit" else ["--output_dir", str(tmp_path / "e")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (no checksum file: the warning of an older checkpoint)
        rc, lines = run_cli([command, "--config", trained["config"], "--ckpt_path", str(ckpt), *args], capsys)
    assert_one_line(rc, lines, str(ckpt), "not a Lightning checkpoint")


def test_a_checkpoint_without_a_checksum_loads_with_a_warning_or_is_refused_on_request(trained, tmp_path, monkeypatch, capsys):
    ckpt = copy_checkpoint(trained, tmp_path)
    checksum_path(ckpt).unlink()
    with pytest.warns(UserWarning, match="has no checksum file .* loaded unverified"):
        cli.main(["evaluate", "--config", trained["config"], "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "e")])
    monkeypatch.setenv("LIT_ALIGN_REQUIRE_CHECKSUM", "1")
    rc, lines = run_cli(["evaluate", "--config", trained["config"], "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "f")], capsys)
    assert_one_line(rc, lines, str(ckpt), "no checksum file", "LIT_ALIGN_REQUIRE_CHECKSUM")


def test_a_kill_between_the_renames_leaves_a_listed_digest(tmp_path, monkeypatch):
    """The checksum file is renamed in before the checkpoint: killed between the two, it lists both files."""
    path = tmp_path / "last.ckpt"
    save_atomic({"step": 1}, path)
    first = file_digest(path)
    real_replace = os.replace

    def killed_at_the_checkpoint_rename(src, dst):
        if Path(dst) == path:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_checkpoint_rename)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"step": 2}, path)
    monkeypatch.setattr(os, "replace", real_replace)
    verify_checksum(path)  # the old file, still listed
    assert file_digest(path) == first and len(checksum_path(path).read_text().splitlines()) == 2


class FullDisk:
    """A file on a disk that fills up after 4 KB: ``write`` raises ENOSPC, as the kernel's write(2) does."""

    def __init__(self, file) -> None:
        self.file, self.written = file, 0

    def write(self, data) -> int:
        self.written += len(data)
        if self.written > 4096:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def test_a_full_disk_during_a_save_is_one_line_naming_the_directory(tmp_path, monkeypatch):
    """The checkpoint's file fills the disk half-way (torch's zip writer turns the OSError into a vague
    RuntimeError "unexpected pos"): one line naming the directory, the previous checkpoint and its checksum intact."""
    import builtins

    import lit_align.checkpoint_io as io

    path = tmp_path / "checkpoints" / "last.ckpt"
    io.AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(10)}, "step": 1}, path)

    def open_on_a_full_disk(file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)
        return FullDisk(handle) if "w" in mode and ".ckpt.tmp" in str(file) else handle

    monkeypatch.setattr(io, "open", open_on_a_full_disk, raising=False)  # the module's writes, not pytest's
    with pytest.raises(Exception) as failed:
        io.AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(100_000)}, "step": 2}, path)
    assert cli.describe_error(failed.value) == (f"error: no space left on device in {path.parent} while writing last.ckpt "
                                                "(the previous checkpoint, if any, is intact): free space and resume")
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    verify_checksum(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]  # no litter


def tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_fit_on_a_really_full_disk_is_one_line(trained, tmp_path):
    """A real full filesystem (a 200 KB tmpfs: the config fits, the 300 KB checkpoint does not), the CLI end to end."""
    disk = tmp_path / "disk"
    if not tmpfs(disk, "200k"):
        pytest.skip("needs root and tmpfs to make a small filesystem")
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        env.pop("LIT_ALIGN_DEBUG", None)
        proc = subprocess.run([sys.executable, "cli.py", "fit", "--config", trained["config"],
                               "--trainer.logger.init_args.save_dir", str(disk)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert len(errors) == 1 and errors[0].startswith("error: no space left on device in ") and str(disk) in errors[0], proc.stderr[-3000:]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_full_disk_errnos():
    from lit_align.checkpoint_files import is_full_disk

    assert is_full_disk(OSError(errno.ENOSPC, "x")) and not is_full_disk(OSError(errno.EACCES, "x"))


def test_without_a_checksum_file_every_member_is_checked_against_the_zip_crc(trained, tmp_path):
    """A checkpoint renamed without its .sha256 (or written by another tool): flipped bytes in any member of
    the zip archive are refused, naming the member (torch itself never reads the CRCs)."""
    import zipfile

    from lit_align.checkpoint_files import CheckpointFileError

    original = trained["ckpt"].read_bytes()
    with zipfile.ZipFile(trained["ckpt"]) as archive:
        members = [(i.filename, i.header_offset) for i in archive.infolist() if i.file_size]
    assert len(members) > 5
    for name, offset in members:
        data = bytearray(original)
        # the member's stored bytes (torch stores them uncompressed) follow its LOCAL header, whose extra field
        # (torch's alignment padding) is not the central directory's: read both lengths from the local header
        name_length, extra_length = struct.unpack("<HH", original[offset + 26: offset + 30])
        start = offset + 30 + name_length + extra_length
        data[start] ^= 0x01  # a single flipped bit
        ckpt = tmp_path / f"{len(name)}-{offset}.ckpt"
        ckpt.write_bytes(bytes(data))
        with pytest.raises(CheckpointFileError, match=f"{ckpt} is corrupted: its member {name} does not match the CRC-32"):
            verify_checksum(ckpt)
    intact = tmp_path / "intact.ckpt"
    intact.write_bytes(original)
    with pytest.warns(UserWarning, match="no checksum file"):
        verify_checksum(intact)


def test_a_renamed_checkpoint_with_flipped_bytes_is_one_line(trained, tmp_path, capsys):
    ckpt = tmp_path / "renamed.ckpt"
    data = bytearray(trained["ckpt"].read_bytes())
    middle = len(data) // 2
    data[middle:middle + 400] = bytes(b ^ 0xFF for b in data[middle:middle + 400])
    ckpt.write_bytes(bytes(data))
    rc, lines = run_cli(["fit", "--config", trained["config"], "--ckpt_path", str(ckpt),
                         "--trainer.logger.init_args.save_dir", str(tmp_path)], capsys)
    assert_one_line(rc, lines, f"{ckpt} is corrupted", "CRC-32")
