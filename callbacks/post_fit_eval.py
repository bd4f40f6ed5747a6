"""Run an evaluation suite on the trained policy when fit ends: the same code path as ``cli.py evaluate``."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch

from evals.base import EvalTask, run_suite


class PostFitEvaluation(L.Callback):
    """At the end of fit, on global rank 0, ``evals.run_suite(policy, tokenizer, tasks, output_dir)``.

    Only reads the module's state and writes files. With several processes:

    - sharded weights (FSDP2, FSDP1, DeepSpeed ZeRO-3): a forward of the sharded policy is a
      collective that rank 0 cannot run alone, so every rank first gathers the full weights
      (``lit_align.sharding.unsharded_policy``) and rank 0 evaluates a plain copy of the policy;
    - replicated weights (DDP): rank 0 evaluates its own replica;

    and the other ranks wait at a barrier until rank 0 is done, so that no process tears the
    process group down under it.
    """

    def __init__(self, tasks: list[EvalTask], output_dir: str | None = None, wait_timeout_s: float = 24 * 3600) -> None:
        self.tasks = tasks
        """Evaluation tasks (class_path entries, as in configs/eval/*.yaml)."""
        self.output_dir = output_dir
        """Where results.json goes; default: <trainer.log_dir>/eval."""
        self.wait_timeout_s = wait_timeout_s
        """With several processes: how long the other ranks wait for rank 0's evaluation (an eval
        suite can outlast the process group's default 30 min timeout, so they wait on a group of their own)."""

    def resolve_output_dir(self, trainer: L.Trainer) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir or os.getcwd()) / "eval"

    def evaluate(self, model: torch.nn.Module, tokenizer, output_dir: Path, trainer: L.Trainer) -> None:
        run_info = {"source": "post_fit", "global_step": trainer.global_step, "epoch": trainer.current_epoch}
        run_suite(model, tokenizer, self.tasks, output_dir, run_info=run_info)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        output_dir = self.resolve_output_dir(trainer)  # trainer.log_dir is a collective: read it on every rank
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            self.evaluate(pl_module.policy, pl_module.tokenizer, output_dir, trainer)
            return
        from lit_align.sharding import parameters_sharded, unsharded_policy

        # a collective on every rank when sharded; the copy exists on rank 0 only
        model = unsharded_policy(trainer, pl_module) if parameters_sharded(trainer.strategy) else pl_module.policy
        waiting = torch.distributed.new_group(backend="gloo", timeout=timedelta(seconds=self.wait_timeout_s))
        try:
            if trainer.is_global_zero:
                self.evaluate(model, pl_module.tokenizer, output_dir, trainer)
        finally:  # rank 0 arrives here even when a task fails, so the others never wait out the timeout
            torch.distributed.barrier(group=waiting)
            torch.distributed.destroy_process_group(waiting)
