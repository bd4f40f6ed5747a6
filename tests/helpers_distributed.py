"""Launching ``cli.py`` (fit, validate) as one or several CPU processes, and recording losses and metrics.

Used by tests/test_distributed_strategies.py. The runs go through the real CLI and the real
``configs/strategy`` presets, so the tests check what users run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = REPO / "configs" / "strategy"


class LossRecorder(L.Callback):
    """Records the loss of each step averaged over ranks, and which pairs formed the global batch.

    Rank 0 writes ``{"losses": [...], "indices": [[...], ...]}`` to ``path`` at the end of fit.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        """JSON file written by global rank 0."""
        self.losses: list[float] = []
        self.indices: list[list[int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].detach().double()  # this rank's mean over its pairs
        self.losses.append(float(trainer.strategy.reduce(loss, reduce_op="mean")))  # equal per-rank batches
        gathered = trainer.strategy.all_gather(batch.index)  # (world, B) or (B,) on one process
        self.indices.append(sorted(int(i) for i in gathered.reshape(-1)))

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            Path(self.path).write_text(json.dumps({"losses": self.losses, "indices": self.indices}))


class MetricsRecorder(L.Callback):
    """Global rank 0 writes the logged epoch metrics (``trainer.callback_metrics``) to ``path`` after validation."""

    def __init__(self, path: str) -> None:
        self.path = path
        """JSON file written by global rank 0."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            Path(self.path).write_text(json.dumps({k: float(v) for k, v in trainer.callback_metrics.items()}))


def write_config(run_dir: Path, data_dir: Path, batch_size: int, steps: int = 4) -> Path:
    """A tiny DPO recipe (tiny Llama, frozen reference, constant lr) writing everything under ``run_dir``."""
    config = {
        "model": {
            "model": {"class_path": "lit_align.models.TinyModel",
                      "init_args": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_position_embeddings": 128}},
            "loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.1}},
            "reference": {"class_path": "lit_align.reference.FrozenReference"},
            "lr": 1.0e-3, "warmup_steps": 0, "schedule": "constant",
        },
        "data": {"class_path": "lit_align.data.PreferenceDataModule",
                 "init_args": {"train_path": str(data_dir / "train.jsonl"), "batch_size": batch_size,
                               "max_length": 64, "max_prompt_length": 32}},
        "trainer": {
            "accelerator": "cpu", "max_steps": steps, "limit_val_batches": 0, "num_sanity_val_steps": 0,
            "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(run_dir), "name": "run", "version": ""}},
            "callbacks": [{"class_path": "tests.helpers_distributed.LossRecorder",
                           "init_args": {"path": str(run_dir / "losses.json")}}],
        },
    }
    return save_config(config, run_dir / "config.in.yaml")


def save_config(config: dict, path: Path) -> Path:
    """Write ``config`` as YAML at ``path`` (folders made) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for name in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"):
        env.pop(name, None)  # a run launched from inside another launcher must not inherit its rank
    return env


def fit(run_dir: Path, data_dir: Path, batch_size: int, strategy: str | None = None, devices: int = 1,
        nodes: int = 1, timeout: float = 150) -> dict:
    """Run ``cli.py fit`` (``nodes`` separate processes, each a "node" on 127.0.0.1); return the recorded losses
    and the gradient norms rank 0 logged (``grad_norms``, from metrics.csv: TrainingMonitor's global norm)."""
    import csv

    launch("fit", write_config(run_dir, data_dir, batch_size), strategy, devices, nodes, timeout)
    result = json.loads((run_dir / "losses.json").read_text())
    with open(run_dir / "run" / "metrics.csv") as f:
        result["grad_norms"] = [float(r["train/grad_norm"]) for r in csv.DictReader(f) if r.get("train/grad_norm")]
    return result


def launch(subcommand: str, config: Path, strategy: str | None = None, devices: int = 1, nodes: int = 1,
           timeout: float = 150) -> None:
    """Run ``cli.py <subcommand> --config <config>`` with a strategy preset on CPU; fail with the output's tail."""
    args = [sys.executable, str(REPO / "cli.py"), subcommand, "--config", str(config)]
    if strategy is not None:
        args += ["--config", str(STRATEGIES / f"{strategy}.yaml")]
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", str(devices), "--trainer.num_nodes", str(nodes)]
    env = clean_env()
    if nodes > 1:
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    procs = [
        subprocess.Popen(args, cwd=REPO, env={**env, "NODE_RANK": str(rank)} if nodes > 1 else env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(nodes)
    ]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-5000:]


def exported_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted((run_dir / "run" / "hf").glob("*.safetensors"))
    assert files, f"no HF export under {run_dir}"
    return {k: v for f in files for k, v in load_file(f).items()}
