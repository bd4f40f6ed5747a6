"""A readable end-of-fit summary: what ran, how fast, the final metrics, and where artifacts are."""

from __future__ import annotations

import time

import lightning as L


class RunSummary(L.Callback):
    """Prints a table at the end of fit (rank 0 only)."""

    def __init__(self, metrics: list[str] | None = None) -> None:
        """
        Args:
            metrics: Metric names to show (default: every val/ metric and the last train/loss).
        """
        self.metrics = metrics
        self._start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective (broadcast from rank 0): every rank must read it
        if not trainer.is_global_zero:
            return
        from rich.console import Console
        from rich.table import Table

        seconds = time.perf_counter() - self._start
        metrics = trainer.callback_metrics
        names = self.metrics or sorted(k for k in metrics if k.startswith("val/")) + ["train/loss"]
        table = Table(title=f"{pl_module.loss.describe()} with {pl_module.reference.describe()}: "
                            f"{trainer.global_step} steps in {seconds:.0f} s")
        table.add_column("metric")
        table.add_column("final", justify="right")
        for name in names:
            if name in metrics:
                table.add_row(name, f"{float(metrics[name]):.4f}")
        console = Console()
        console.print(table)
        for callback in trainer.callbacks:
            if getattr(callback, "best_model_path", None) or getattr(callback, "last_model_path", None):
                console.print(f"checkpoint: {callback.last_model_path or callback.best_model_path}")
            if getattr(callback, "path", None):
                console.print(f"HF export:  {callback.path}")
        console.print(f"run dir:    {log_dir}")
