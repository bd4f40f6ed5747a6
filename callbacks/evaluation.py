"""Run the evaluation suite on a module's policy: the one code path of ``cli.py evaluate`` and of ``PostFitEvaluation``.

It lives beside the post-fit callback, outside ``lit_align``, because it joins the library (a trainer,
a module) with ``evals``; the library core imports neither ``evals`` nor this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from evals.base import EvalTask, run_suite
from lit_align.errors import UserError
from lit_align.sharding import run_on_rank_zero
from lit_align.trainer import load_for_evaluation


class EvaluationIncomplete(UserError):
    """An evaluation task failed (e.g. its judge never answered): results.json says ``complete: false``."""


def evaluate_policy(trainer: L.Trainer, module: L.LightningModule, tasks: list[EvalTask], output_dir: Path,
                    metrics: dict[str, Any] | None = None, run_info: dict[str, Any] | None = None,
                    wait_timeout_s: float = 24 * 3600, show: bool = False) -> dict:
    """``evals.run_suite`` on the module's policy, on global rank 0; returns results.json's content there, {} elsewhere.

    Call it on every rank: with several processes sharded weights are gathered first and the other
    ranks wait for rank 0 (``lit_align.sharding.run_on_rank_zero``). ``show`` prints the results table.
    """

    def suite(policy) -> dict:
        results = run_suite(policy.to(trainer.strategy.root_device), module.tokenizer, list(tasks or []), output_dir,
                            metrics, run_info)
        if show:
            print_results(results, output_dir)
        return results

    return run_on_rank_zero(trainer, module, suite, wait_timeout_s) or {}


def evaluate_checkpoint(trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule | None,
                        ckpt_path: str | None, weights_only: bool | None, tasks: list[EvalTask] | None,
                        output_dir: str | None) -> dict:
    """The ``evaluate`` subcommand (its arguments are documented on ``cli.EvaluatingTrainer.evaluate``)."""
    lightning_ckpt = load_for_evaluation(model, ckpt_path, weights_only)
    metrics: dict = {}
    if datamodule is not None and not validation_disabled(trainer):
        results = trainer.validate(model, datamodule=datamodule, ckpt_path=lightning_ckpt, weights_only=weights_only)
        metrics.update({k: float(v) for r in results for k, v in r.items()})  # [] when no batch ran
    if model.policy is None:
        model.configure_model()
    out = Path(output_dir) if output_dir else Path(trainer.log_dir or trainer.default_root_dir) / "eval"
    run_info = {"ckpt_path": ckpt_path, "model": type(model.model_source).__name__}
    # after a multi-process validate the policy may be sharded: gathered first, rank 0 evaluates
    results = evaluate_policy(trainer, model, tasks or [], out, metrics, run_info, show=True)
    refuse_incomplete(results, out)  # after the ranks have met: rank 0 alone raises, nobody waits for it
    return results


def validation_disabled(trainer: L.Trainer) -> bool:
    """``trainer.limit_val_batches: 0`` (as a recipe may set for its fit): no held-out pass, only the tasks."""
    return trainer.limit_val_batches == 0


def refuse_incomplete(results: dict, out: Path) -> None:
    """Raise ``EvaluationIncomplete`` naming each failed task, so ``cli.py evaluate`` exits non-zero."""
    failed = results.get("failed") or {}
    if failed:
        reasons = "; ".join(f["reason"] for f in failed.values())
        raise EvaluationIncomplete(f"evaluation incomplete ({out / 'results.json'} has complete: false): {reasons}")


def print_results(results: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"evaluation -> {out / 'results.json'}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(results["metrics"].items()):
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    for name, reason in results.get("skipped", {}).items():
        table.add_row(f"{name} (skipped)", reason)
    for name, failure in results.get("failed", {}).items():
        table.add_row(f"{name} (FAILED)", failure["reason"])
    for name, undefined in results.get("undefined", {}).items():
        table.add_row(f"{name} (undefined, left out)", ", ".join(undefined))
    Console().print(table)
