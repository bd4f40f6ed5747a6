"""Run an evaluation suite on the trained policy when fit ends: the same code path as ``cli.py evaluate``."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L

from evals.base import EvalTask, run_suite


class PostFitEvaluation(L.Callback):
    """At the end of fit, on global rank 0, ``evals.run_suite(policy, tokenizer, tasks, output_dir)``.

    Only reads the module's state and writes files; other ranks do nothing (the policy must be
    gatherable on rank 0: unsharded, or the strategy's full state on rank 0).
    """

    def __init__(self, tasks: list[EvalTask], output_dir: str | None = None) -> None:
        self.tasks = tasks
        """Evaluation tasks (class_path entries, as in configs/eval/*.yaml)."""
        self.output_dir = output_dir
        """Where results.json goes; default: <trainer.log_dir>/eval."""

    def resolve_output_dir(self, trainer: L.Trainer) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir or os.getcwd()) / "eval"

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        output_dir = self.resolve_output_dir(trainer)  # trainer.log_dir is a collective: read it on every rank
        if not trainer.is_global_zero:
            return
        run_info = {"source": "post_fit", "global_step": trainer.global_step, "epoch": trainer.current_epoch}
        run_suite(pl_module.policy, pl_module.tokenizer, self.tasks, output_dir, run_info=run_info)
