"""Run an evaluation suite on the trained policy when fit ends: the same code path as ``cli.py evaluate``."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L

from callbacks.evaluation import evaluate_policy
from evals.base import EvalTask


class PostFitEvaluation(L.Callback):
    """At the end of fit, on global rank 0, ``evals.run_suite(policy, tokenizer, tasks, output_dir)``.

    Only reads the module's state and writes files. With several processes, sharded weights are
    gathered first and the other ranks wait for rank 0 (``callbacks.evaluation.evaluate_policy``).
    """

    def __init__(self, tasks: list[EvalTask], output_dir: str | None = None, wait_timeout_s: float = 24 * 3600) -> None:
        """
        Args:
            tasks: Evaluation tasks (class_path entries, as in configs/eval/*.yaml).
            output_dir: Where results.json goes; default: <trainer.log_dir>/eval.
            wait_timeout_s: With several processes: seconds the other ranks wait for rank 0's evaluation (an
                eval suite can outlast the process group's default 30 min timeout, so they wait on a group of
                their own).
        """
        self.tasks = tasks
        self.output_dir = output_dir
        self.wait_timeout_s = wait_timeout_s

    def resolve_output_dir(self, trainer: L.Trainer) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir or os.getcwd()) / "eval"

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        output_dir = self.resolve_output_dir(trainer)  # trainer.log_dir is a collective: read it on every rank
        run_info = {"source": "post_fit", "global_step": trainer.global_step, "epoch": trainer.current_epoch}
        evaluate_policy(trainer, pl_module, self.tasks, output_dir, run_info=run_info, wait_timeout_s=self.wait_timeout_s)
