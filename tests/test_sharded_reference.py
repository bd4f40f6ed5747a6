"""Moving references under two gloo processes on CPU: DDP replicas and FSDP2 shards.

After 4 steps of MovingReference(alpha 0.5, tau 2) the reference on every rank equals the
recurrence ``ref <- lerp(ref, theta_k, 0.5)`` (k = 2, 4) replayed on the full weights, bit for bit:
the update is element-wise, so running it on local shards changes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_align.synthetic import write_task

SCRIPT = Path(__file__).with_name("helpers_reference_sharded.py")


def run_two_processes(tmp_path: Path, kind: str) -> list[dict]:
    paths = write_task(tmp_path / "data", train=64, val=16, test=16)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCRIPT.parent.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), kind, str(paths["train"].parent), str(out)],
        cwd=SCRIPT.parent.parent, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def check(results: list[dict]) -> None:
    for result in results:
        assert result["updates"] == 2
        assert set(result["reference"]) == set(result["expected"])
        for name, value in result["reference"].items():
            assert torch.equal(value, result["expected"][name]), name
        assert any(not torch.equal(result["reference"][n], result["policy"][n]) for n in result["policy"])
    for name in results[0]["reference"]:
        assert torch.equal(results[0]["reference"][name], results[1]["reference"][name]), name


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_reference_follows_the_full_weight_recurrence(tmp_path):
    results = run_two_processes(tmp_path, "ddp")
    check(results)
    assert not results[0]["sharded"] and not results[0]["reference_sharded"]


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp2_reference_updates_shard_locally_and_follows_the_recurrence(tmp_path):
    results = run_two_processes(tmp_path, "fsdp")
    assert results[0]["sharded"] and results[0]["reference_sharded"]
    check(results)
    assert results[0]["distance"] == pytest.approx(results[1]["distance"])  # all-reduced over shards
