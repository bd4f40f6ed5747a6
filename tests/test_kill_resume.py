"""A real SIGKILL at a random step, then ``cli.py fit --ckpt_path <run>/checkpoints/last.ckpt``: the
resumed run ends bit-identical to an uninterrupted one (weights, optimizer, scheduler, reference and
loss state, and the whole metrics.csv: the rows logged before the kill are kept, those after the
checkpoint logged again), for a frozen reference, a moving one (TR-DPO) and epsilon-DPO's adaptive beta.

The killed run is a subprocess of the real CLI with the CLI's own checkpointing (``checkpoint``
group, every step here); it prints each finished step and is killed with SIGKILL as soon as the
chosen step is seen, so the kill lands wherever the process has got to: in the next step's forward,
in the optimizer, or half-way through writing last.ckpt. The kill step is drawn from a seeded RNG.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from tests.helpers_reference import assert_tensors_equal

REPO = Path(__file__).resolve().parents[1]
STEPS = 10  # 16 batches per epoch: every kill and resume is mid-epoch

CASES = {
    "frozen": ({"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.1}},
               {"class_path": "lit_align.reference.FrozenReference"}),
    "trdpo_moving": ({"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.1}},
                     {"class_path": "lit_align.reference.MovingReference", "init_args": {"alpha": 0.5, "tau": 2}}),
    "epsilon_dpo": ({"class_path": "lit_align.losses.EpsilonDPO", "init_args": {"beta": 0.1, "eps": 0.05}},
                    {"class_path": "lit_align.reference.FrozenReference"}),
}


class StepBeacon(L.Callback):
    """Prints ``STEP <n>`` (flushed) after each optimizer step, for the test to time its kill."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"STEP {trainer.global_step}", flush=True)


def write_config(tmp_path: Path, name: str, data: dict, loss: dict, reference: dict) -> Path:
    config = {
        "seed_everything": 0,
        "model": {
            "model": {"class_path": "lit_align.models.TinyModel",
                      "init_args": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_position_embeddings": 128}},
            "loss": loss, "reference": reference, "lr": 1e-2, "warmup_steps": 0.2, "schedule": "cosine",
        },
        "data": {"class_path": "lit_align.data.PreferenceDataModule",
                 "init_args": {"train_path": str(data["train"]), "batch_size": 4, "max_length": 64, "max_prompt_length": 32,
                               "chat_template": False}},
        "checkpoint": {"every_n_train_steps": 1},
        "trainer": {
            "max_steps": STEPS, "limit_val_batches": 0, "num_sanity_val_steps": 0, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(tmp_path), "name": name, "version": ""}},
            "callbacks": [{"class_path": "tests.test_kill_resume.StepBeacon"}],
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fit_and_kill(config: Path, kill_at: int) -> tuple[int, str]:
    """Run ``cli.py fit`` until it reports step ``kill_at``, then SIGKILL it; returns (exit code, output)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "fit", "--config", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == f"STEP {kill_at}":
                os.kill(proc.pid, signal.SIGKILL)
                break
        return proc.wait(timeout=300), "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def logged_history(run: Path) -> str:
    """metrics.csv as text, the host-clock columns (tokens/s, MFU) blanked: every other value is bit-comparable."""
    from callbacks.training_monitor import WALL_CLOCK_METRICS

    rows = [row.split(",") for row in (run / "metrics.csv").read_text().splitlines()]
    clock = [i for i, name in enumerate(rows[0]) if name in WALL_CLOCK_METRICS]
    return "\n".join(",".join("" if i in clock and k else v for i, v in enumerate(row)) for k, row in enumerate(rows))


def losses(run: Path) -> dict[int, str]:
    """train/loss per step from metrics.csv, as the logged text (bit-for-bit comparable)."""
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    out = {}
    for row in rows[1:]:
        values = dict(zip(header, row.split(",")))
        if values.get("train/loss"):
            out[int(values["step"])] = values["train/loss"]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path, case):
    import cli
    from benchmarks.demos.sort_task import write_task

    data = write_task(tmp_path / "data", train=64, val=8, test=8)
    loss, reference = CASES[case]
    kill_at = random.Random(f"kill-{case}").randint(2, STEPS - 2)

    code, output = fit_and_kill(write_config(tmp_path, "killed", data, loss, reference), kill_at)
    assert code == -signal.SIGKILL, output[-3000:]
    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    resumed_from = torch.load(last, weights_only=False)["global_step"]  # whole: the kill never leaves half a file
    assert 1 <= resumed_from <= STEPS - 1, resumed_from
    print(f"{case}: SIGKILL after 'STEP {kill_at}'; last.ckpt held step {resumed_from}")

    cli.main(["fit", "--config", str(tmp_path / "killed.yaml"), "--ckpt_path", str(last)])
    cli.main(["fit", "--config", str(write_config(tmp_path, "full", data, loss, reference))])

    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = torch.load(last, weights_only=False)
    assert full["global_step"] == resumed["global_step"] == STEPS
    for key in sorted(set(full) - {"callbacks", "hyper_parameters", "datamodule_hyper_parameters"}):
        assert_tensors_equal(full[key], resumed[key], key)
    if case == "trdpo_moving":
        state = resumed["state_dict"]
        assert state["reference.updates"] == STEPS // 2 and any(k.startswith("reference.model.") for k in state)
    if case == "epsilon_dpo":
        (beta,) = [v for k, v in resumed["state_dict"].items() if k.startswith("loss.") and "beta" in k]
        assert float(beta) != 0.1  # the adaptive baseline moved, and resumed where it was
    assert set(losses(killed)) == set(range(STEPS))  # the steps before the kill are still there
    assert logged_history(killed) == logged_history(tmp_path / "full")
