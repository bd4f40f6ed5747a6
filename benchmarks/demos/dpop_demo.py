"""Reproduce DPOP's headline on small-edit-distance pairs: DPO lowers the chosen log-prob, DPOP does not.

Pal et al. 2024 (Smaug, arXiv 2402.13228), Sec. 3: when chosen and rejected completions differ in a
few tokens, DPO can widen the margin ``D = rw - rl`` while the chosen completion's log-prob falls
below the reference's (``rw < 0``). DPOP's penalty ``lam * max(0, -rw)`` inside the sigmoid prevents it.

Set-up (all local, CPU, about a minute): the synthetic sort task, whose rejected answer is the right
one with a single edit (two neighbours swapped, one digit changed or dropped); a tiny Llama-shaped
model given a short SFT stage on the chosen answers; then DPO and DPOP from that same start, each
against a frozen copy of it. Every ``eval_every`` steps both are measured on the same held-out pairs:
the change of the chosen log-prob ``mean(pw - qw)`` and the margin ``mean(D)`` (validation
``rewards/chosen / beta`` and ``rewards/margins / beta``).

    python -m benchmarks.demos.dpop_demo --out runs/dpop/dpop.png
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import lightning as L
import torch

from benchmarks.demos.sort_task import write_task
from lit_align.data import PreferenceDataModule
from lit_align.losses import DPO, DPOP, SFT, PreferenceLoss
from lit_align.models import PretrainedModel, TinyModel
from lit_align.module import PreferenceModule
from lit_align.reference import FrozenReference, NoReference
from lit_align.trainer import quiet_trainer


class ValidationRecorder(L.Callback):
    """Keeps (step, chosen log-prob change, margin) after each validation run."""

    def __init__(self, beta: float) -> None:
        """
        Args:
            beta: The loss's beta, to turn the logged rewards (beta times a log-ratio) back into log-ratios.
        """
        self.beta = beta
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # after the module logged
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        self.rows.append({
            "step": trainer.global_step,
            "chosen_change": float(m["val/rewards/chosen"]) / self.beta,  # mean(pw - qw)
            "margin": float(m["val/rewards/margins"]) / self.beta,  # mean(D)
            "chosen_logps": float(m["val/logps/chosen"]),
        })


def _trainer(steps: int, eval_every: int | None, callbacks: list) -> L.Trainer:
    return quiet_trainer(
        max_steps=steps, num_sanity_val_steps=0, limit_val_batches=None if eval_every else 0,
        val_check_interval=eval_every, check_val_every_n_epoch=None if eval_every else 1, callbacks=callbacks,
    )


def _data(directory: Path, batch_size: int) -> PreferenceDataModule:
    return PreferenceDataModule(
        train_path=str(directory / "train.jsonl"), val_path=str(directory / "val.jsonl"),
        batch_size=batch_size, eval_batch_size=64, max_length=40, max_prompt_length=24, seed=0,
    )


def run(
    workdir: str | Path,
    steps: int = 60,
    sft_steps: int = 80,
    eval_every: int = 20,
    beta: float = 0.1,
    lam: float = 50.0,
    lr: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    threads: int | None = 1,
) -> dict[str, list[dict[str, float]]]:
    """SFT a tiny model, then train it with DPO and with DPOP; returns each loss's validation curve.

    ``threads``: torch intra-op threads while it runs (1 is fastest for a model this small, and
    far faster on a busy machine; restored afterwards).
    """
    workdir = Path(workdir)
    write_task(workdir / "data", train=1000, val=64, test=1, seed=seed)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(workdir, steps, sft_steps, eval_every, beta, lam, lr, batch_size, seed)
    finally:
        torch.set_num_threads(previous_threads)


def _run(workdir: Path, steps: int, sft_steps: int, eval_every: int, beta: float, lam: float, lr: float,
         batch_size: int, seed: int) -> dict[str, list[dict[str, float]]]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*modules? in eval mode.*")
        L.seed_everything(seed, verbose=False)
        tiny = TinyModel(hidden_size=64, num_layers=2, num_heads=4, seed=seed)
        sft = PreferenceModule(tiny, SFT(), NoReference(), lr=3e-3, warmup_steps=0.05, schedule="cosine")
        _trainer(sft_steps, None, []).fit(sft, datamodule=_data(workdir / "data", 32))
        start = workdir / "sft_hf"
        sft.policy.save_pretrained(start)
        sft.tokenizer.save_pretrained(start)

        curves = {}
        losses: dict[str, PreferenceLoss] = {"DPO": DPO(beta), "DPOP": DPOP(beta, lam=lam)}
        for name, loss in losses.items():
            L.seed_everything(seed, verbose=False)  # same batches in the same order for both
            module = PreferenceModule(PretrainedModel(str(start)), loss, FrozenReference(), lr=lr, warmup_steps=0, schedule="constant")
            recorder = ValidationRecorder(beta)
            _trainer(steps, eval_every, [recorder]).fit(module, datamodule=_data(workdir / "data", batch_size))
            curves[name] = [{"step": 0, "chosen_change": 0.0, "margin": 0.0}] + recorder.rows
    return curves


def plot(curves: dict[str, list[dict[str, float]]], out: str | Path, title: str = "") -> Path:
    from evals.charts import pyplot, save_figure

    fig, axes = pyplot().subplots(1, 2, figsize=(9, 3.6))
    for name, rows in curves.items():
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["chosen_change"] for r in rows], marker="o", label=name)
        axes[1].plot(steps, [r["margin"] for r in rows], marker="o", label=name)
    axes[0].axhline(0.0, color="grey", lw=0.8)
    axes[0].set(title="chosen log-prob vs reference, mean(pw - qw)", xlabel="optimizer step")
    axes[1].set(title="margin, mean(D)", xlabel="optimizer step")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/dpop/dpop.png", help="where to write the plot (a .json of the curves goes beside it)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--sft-steps", type=int, default=80)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lam", type=float, default=50.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        curves = run(tmp, args.steps, args.sft_steps, args.eval_every, args.beta, args.lam, args.lr, seed=args.seed)
    out = plot(curves, args.out, f"small-edit-distance pairs, beta {args.beta:g}, DPOP lam {args.lam:g}")
    Path(out).with_suffix(".json").write_text(json.dumps(curves, indent=1))
    for name, rows in curves.items():
        last = rows[-1]
        print(f"{name:5s} step {last['step']}: chosen log-prob change {last['chosen_change']:+.3f}, margin {last['margin']:+.3f}")
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
