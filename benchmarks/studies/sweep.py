"""Beta sweep: run one recipe for several betas and tabulate / plot the final metrics against beta.

    python -m benchmarks.studies.sweep --config configs/recipes/tiny_beta_sweep.yaml --betas 0.5 0.1 0.02 --out runs/sweep

Each beta is one ``python cli.py fit`` subprocess with the recipe plus a small override file
(``<out>/beta_<b>/override.yaml``: the loss's beta and a CSV logger writing into ``<out>/beta_<b>``).
With a cached reference in the recipe (``CachedReference``, as tiny_beta_sweep.yaml has) the reference
log-probs do not depend on beta, so the first run computes them and every other run loads them.
Arguments after ``--`` go to every run (e.g. ``-- --trainer.max_steps 50``). Runs that already
finished (``sweep_done`` marker in their folder) are skipped unless ``--force``.

Writes ``<out>/sweep.csv``, ``<out>/sweep.md`` and ``<out>/sweep.png`` (the last validation value of
each ``val/`` metric per run).
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]  # benchmarks/<group>/<file>
PLOTTED = ("val/loss", "val/rewards/accuracies", "val/rewards/margins", "val/rewards/chosen", "val/logps/chosen", "val/kl/per_token")


def run_name(beta: float) -> str:
    return f"beta_{beta:g}"


def override(beta: float, out: Path) -> dict:
    """The config layered over the recipe for one beta."""
    return {
        "model": {"loss": {"init_args": {"beta": beta}}},
        "trainer": {
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(out), "name": run_name(beta), "version": ""},
            }
        },
    }


def final_metrics(metrics_csv: Path) -> dict[str, float]:
    """Last logged value of every ``val/`` column of a CSVLogger ``metrics.csv`` (plus the step)."""
    final: dict[str, float] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key.startswith("val/") and value not in ("", None):
                    final[key] = float(value)
                    final["step"] = float(row.get("step") or 0)
    return final


def fit_one(config: str, beta: float, out: Path, extra: list[str], force: bool = False) -> Path:
    """Run ``cli.py fit`` for one beta (unless already done); returns its metrics.csv."""
    run_dir = out / run_name(beta)
    metrics = run_dir / "metrics.csv"
    done = run_dir / "sweep_done"  # written only after a successful run: an interrupted one is re-run
    if done.is_file() and metrics.is_file() and not force:
        print(f"[sweep] beta {beta:g}: already done ({metrics}), skipping", flush=True)
        return metrics
    run_dir.mkdir(parents=True, exist_ok=True)
    layer = run_dir / "override.yaml"
    layer.write_text(yaml.safe_dump(override(beta, out), sort_keys=False))
    # --overwrite: an interrupted (or forced) beta is re-run from scratch into its own folder
    command = [sys.executable, str(REPO / "cli.py"), "fit", "--config", config, "--config", str(layer), "--overwrite=true", *extra]
    print(f"[sweep] beta {beta:g}: {' '.join(command)}", flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise SystemExit(f"[sweep] the run for beta {beta:g} failed (exit {result.returncode}); see its output above")
    if not metrics.is_file():
        raise SystemExit(f"[sweep] the run for beta {beta:g} wrote no {metrics} (does the recipe validate?)")
    done.write_text(" ".join(command) + "\n")
    return metrics


def summarise(out: Path, betas: list[float]) -> list[dict[str, float]]:
    """Collect each run's final metrics and write sweep.csv, sweep.md and sweep.png; returns the rows."""
    rows = []
    for beta in sorted(betas, reverse=True):
        metrics = out / run_name(beta) / "metrics.csv"
        rows.append({"beta": beta, **(final_metrics(metrics) if metrics.is_file() else {})})
    columns = ["beta", "step"] + sorted({k for r in rows for k in r if k.startswith("val/")})
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: r.get(c, "") for c in columns} for r in rows)
    fmt = lambda v: "" if v is None else (f"{v:g}" if isinstance(v, float) and (v == 0 or abs(v) >= 1e-3) else f"{v:.3g}")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    (out / "sweep.md").write_text(f"Final validation metrics per beta ({out})\n\n" + "\n".join(lines) + "\n")
    plot(rows, out / "sweep.png")
    return rows


def plot(rows: list[dict[str, float]], path: Path) -> Path:
    import matplotlib.ticker

    from evals.charts import pyplot, save_figure

    names = [n for n in PLOTTED if any(n in r for r in rows)] or sorted({k for r in rows for k in r if k.startswith("val/")})[:6]
    cols = min(3, max(1, len(names)))
    fig, axes = pyplot().subplots(math.ceil(len(names) / cols) or 1, cols, figsize=(4 * cols, 3.2 * math.ceil(len(names) / cols) or 3.2), squeeze=False)
    for ax, name in zip(axes.flat, names):
        points = sorted((r["beta"], r[name]) for r in rows if name in r)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        ax.set_xscale("log")
        ax.set_xticks([p[0] for p in points], [f"{p[0]:g}" for p in points])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set(title=name, xlabel="beta")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    return save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description="Run a recipe for several betas; tabulate and plot final metrics.")
    parser.add_argument("--config", required=True, help="the recipe (e.g. configs/recipes/tiny_beta_sweep.yaml)")
    parser.add_argument("--betas", type=float, nargs="+", required=True)
    parser.add_argument("--out", default="runs/sweep", help="sweep directory: one run folder per beta, plus sweep.{csv,md,png}")
    parser.add_argument("--force", action="store_true", help="re-run betas that already have results")
    args = parser.parse_args(argv)
    for beta in args.betas:
        if not beta > 0:
            parser.error(f"every beta must be > 0, got {beta:g}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for beta in args.betas:
        fit_one(args.config, beta, out, extra, args.force)
    rows = summarise(out, args.betas)
    print((out / "sweep.md").read_text())
    print(f"[sweep] wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'sweep.png'}")
    return rows


if __name__ == "__main__":
    main()
