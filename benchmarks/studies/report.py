"""A study's paired statistics and its written forms: McNemar's exact test, ``study.md`` and ``study.png``."""

from __future__ import annotations

import statistics
from pathlib import Path

SUMMARY = ("sort_verifier/accuracy", "val/rewards/accuracies", "val/rewards/margins", "val/logps/chosen", "val/loss")
"""The metrics a study tabulates (those present), in this order."""


def mcnemar(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p of ``fixed`` vs ``broken`` discordant pairs (binomial, p = 1/2)."""
    from math import comb

    n = fixed + broken
    return min(1.0, 2 * sum(comb(n, k) for k in range(min(fixed, broken) + 1)) / 2**n) if n else 1.0


def discordant(reference: list[bool], tuned: list[bool]) -> tuple[int, int]:
    """Prompts ``tuned`` gets right and ``reference`` wrong (fixed), and the reverse (broken)."""
    pairs = list(zip(reference, tuned))
    return sum(t and not r for r, t in pairs), sum(r and not t for r, t in pairs)


def verdicts(eval_dir: Path, task: str = "sort_verifier") -> list[bool]:
    """Per-prompt correctness written by the verifier task, in prompt order."""
    from lit_align.data.sources import read_jsonl

    return [row["correct"] for row in read_jsonl(eval_dir / task / "answers.jsonl")]


def markdown(summary: dict) -> str:
    cols = [k for k in SUMMARY if any(k in r["metrics"] for r in summary["arms"].values())]
    head = ["arm"] + ([summary["axis"]] if summary["axis"] else []) + cols + [f"fixed / broken vs {summary['baseline']}", "McNemar p"]
    lines = [f"# {summary['title']}", ""]
    if summary["finding"]:
        lines += [f"Claim tested: {summary['finding']}", ""]
    lines += [f"Seeds {summary['seeds']}; mean ± sd over seeds; test prompts paired per prompt and pooled over seeds.", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in summary["arms"].items():
        cells = [name] + ([f"{summary['x'].get(name):g}" if summary["x"].get(name) is not None else ""] if summary["axis"] else [])
        cells += [f"{row['metrics'][k]['mean']:.3f} ± {row['metrics'][k]['sd']:.3f}" if k in row["metrics"] else "" for k in cols]
        v, shown = row["vs_baseline"], row["vs_baseline"] is not None and name != summary["baseline"]
        cells += [f"{v['fixed']} / {v['broken']}" if shown else "", f"{v['p']:.2g}" if shown else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path, log_axis: bool = True) -> Path:
    from evals.charts import pyplot, save_figure

    metrics = next(iter(summary["curves"].values()), {}).keys()
    fig, axes = pyplot().subplots(1, 1 + len(metrics), figsize=(4.4 * (1 + len(metrics)), 3.6), squeeze=False)
    ax, key = axes[0][0], "sort_verifier/accuracy"
    if not any(key in r["metrics"] for r in summary["arms"].values()):  # no verifier (a real model): held-out pairs
        key = "val/rewards/accuracies"
    arms = {n: r for n, r in summary["arms"].items() if n != "start" and key in r["metrics"]}
    on_axis = {n: r for n, r in arms.items() if summary["x"].get(n) is not None}
    if summary["axis"] and on_axis:
        for i, group in enumerate(dict.fromkeys(summary["group"][n] for n in on_axis)):
            members = {n: r for n, r in on_axis.items() if summary["group"][n] == group}
            xs = [summary["x"][n] for n in members]
            ax.plot(xs, [r["metrics"][key]["mean"] for r in members.values()], marker="o", color=f"C{i}", label=group or None)
            for x, r in zip(xs, members.values()):
                ax.scatter([x] * len(r["metrics"][key]["seeds"]), r["metrics"][key]["seeds"], color=f"C{i}", s=10, alpha=0.5)
        for i, (name, r) in enumerate(n_r for n_r in arms.items() if n_r[0] not in on_axis):  # arms off the axis
            ax.axhline(r["metrics"][key]["mean"], color=f"C{i + 5}", lw=1, label=name)
        ax.set_xscale("log" if log_axis else "linear")
        ax.set_xlabel(summary["axis"])
    else:
        for i, r in enumerate(arms.values()):
            ax.bar(i, r["metrics"][key]["mean"], yerr=r["metrics"][key]["sd"], alpha=0.7, capsize=3)
            ax.scatter([i] * len(r["metrics"][key]["seeds"]), r["metrics"][key]["seeds"], color="black", s=10, zorder=3)
        ax.set_xticks(range(len(arms)), list(arms), rotation=20)
    if key in summary["arms"]["start"]["metrics"]:
        ax.axhline(summary["arms"]["start"]["metrics"][key]["mean"], color="grey", ls="--", lw=1,
                   label="SFT start" if key == "sort_verifier/accuracy" else "untuned")
        ax.legend()
    ax.set(title="verifier accuracy (test)" if key == "sort_verifier/accuracy" else "reward accuracy (held-out pairs)")
    for ax, metric in zip(axes[0][1:], metrics):
        for name, per_metric in summary["curves"].items():
            runs = [r for r in per_metric[metric] if r]
            steps = sorted(set.intersection(*(set(r) for r in runs))) if runs else []
            ax.plot(steps, [statistics.fmean(r[s] for r in runs) for s in steps], label=name)
        ax.set(title=f"{metric} (mean over seeds)", xlabel="optimizer step")
        ax.legend(fontsize=7)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.suptitle(summary["title"], fontsize=10)
    return save_figure(fig, path, dpi=110)
