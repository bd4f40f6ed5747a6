"""The markdown report of one harness invocation: per-run summaries, medians, ratios and MFU."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from benchmarks.configs import Config
from benchmarks.shapes import Shape
from benchmarks.workload import Paths, StepWork


@dataclass
class Cell:
    """One sequence-length setting of an invocation and everything measured in it."""

    seq_len: int | None
    """``--seq-len`` (None: the default mixed-length workload)."""
    batch_size: int
    """Pairs per step."""
    max_length: int
    """max_length of both frameworks (the workload's rows all fit: no truncation)."""
    paths: Paths
    """Model and data files."""
    work: StepWork
    """Tokens and squared row lengths per step."""
    runs: dict[str, list[dict]] = field(default_factory=dict)
    """``framework:row`` -> one summary per completed round (see ``summarize``)."""
    losses: dict[str, list[float]] = field(default_factory=dict)
    """``framework:row`` -> loss per step of the first round."""
    failures: dict[str, str] = field(default_factory=dict)
    """``framework:row`` -> why it failed (CUDA out of memory), for the rows that did."""
    rounds: int = 0
    """Rounds completed."""
    last_round_s: float = 0.0
    """Wall time of the last round (predicts the next one for the time budget)."""


def summarize(result: dict, work: StepWork, warmup: int) -> dict:
    """Steps after ``warmup``: tokens/s (TRL's count), squared row lengths per second, step time, memory."""
    ends = result["step_ends"]
    seconds = ends[-1] - ends[warmup - 1]
    timed = len(ends) - warmup
    return {"tok_s": sum(work.tokens[warmup:len(ends)]) / seconds, "sq_s": sum(work.sum_sq[warmup:len(ends)]) / seconds,
            "step_s": seconds / timed, "rss_mib": result["rss_peak_mib"] - result["rss_start_mib"],
            "cuda_mib": result["cuda_peak_mib"]}


def mfu(shape: Shape, summary: dict, live: bool, peak_tflops: float, attention: bool = False) -> float:
    """Model FLOPs per second (8N / 6N per token, plus attention if asked) over the device peak."""
    flops = shape.model_flops(summary["tok_s"], live)
    if attention:
        flops += shape.attention_flops(summary["sq_s"], live)
    return flops / (peak_tflops * 1e12)


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _ratio(a: list[dict], b: list[dict], key: str) -> str:
    both = [x[key] / y[key] for x, y in zip(a, b) if x[key] and y[key]]
    return f"{statistics.median(both):.2f}x" if both else "n/a"


def cell_section(cell: Cell, shape: Shape, configs: list[Config], pairs: dict[str, Config], cuda: bool,
                 peak_tflops: float | None, tolerance: float, rounds: int) -> list[str]:
    """The trajectory check and the throughput table of one cell."""
    w = cell.work
    title = f"seq-len {cell.seq_len}" if cell.seq_len else "mixed lengths"
    lines = [f"## {title}", "",
             f"Batch {cell.batch_size} pairs, {sum(w.tokens) / len(w.tokens):.0f} tokens per step on average (TRL's "
             f"count), longest row {w.longest} tokens, max_length {cell.max_length} (no truncation). "
             f"{cell.rounds} of {rounds} rounds completed.", "",
             "Loss trajectories (first round): max |lit - TRL| over all steps", "",
             "| config | vs | max abs loss diff | ok |", "|---|---|---|---|"]
    for c in configs:
        a, b = cell.losses.get(f"lit:{c.name}"), cell.losses.get(f"trl:{pairs[c.name].name}")
        if not a or not b:
            lines.append(f"| {c.name} | {pairs[c.name].name} | n/a | n/a (a run failed) |")
            continue
        diff = max(abs(x - y) for x, y in zip(a, b))
        tol = tolerance if not c.bf16 else 5e-2
        lines.append(f"| {c.name} | {pairs[c.name].name} | {diff:.2e} | {'yes' if diff <= tol else 'NO'} (tol {tol:g}) |")
    mem_field, mem_label = ("cuda_mib", "CUDA peak MiB") if cuda else ("rss_mib", "peak RSS growth MiB")
    header = f"| config | tokens/s | step ms | {mem_label} | tokens/s vs TRL | memory vs TRL |"
    if peak_tflops:
        header += " MFU | MFU+attn |"
    lines += ["", header, "|---" * (header.count("|") - 1) + "|"]
    rows = [(f"trl:{t.name}", t, None) for t in {p.name: p for p in pairs.values()}.values()]
    rows += [(f"lit:{c.name}", c, f"trl:{pairs[c.name].name}") for c in configs]
    for key, cfg, ref in rows:
        runs = cell.runs.get(key, [])
        if not runs:
            reason = cell.failures.get(key, "not run")
            lines.append(f"| {key} | {reason} |" + " |" * (header.count("|") - 3))
            continue
        ref_runs = cell.runs.get(ref, []) if ref else runs
        line = (f"| {key} | {_median(runs, 'tok_s'):.0f} | {_median(runs, 'step_s') * 1000:.0f} | "
                f"{_median(runs, mem_field):.0f} | {_ratio(runs, ref_runs, 'tok_s')} | {_ratio(runs, ref_runs, mem_field)} |")
        if peak_tflops:
            values = [(mfu(shape, r, not cfg.cached, peak_tflops), mfu(shape, r, not cfg.cached, peak_tflops, True))
                      for r in runs]
            line += (f" {100 * statistics.median(v[0] for v in values):.1f}% |"
                     f" {100 * statistics.median(v[1] for v in values):.1f}% |")
        lines.append(line)
    if cell.failures:
        lines += ["", "Failed runs: " + "; ".join(f"{k}: {v}" for k, v in sorted(cell.failures.items())) + "."]
    return lines + [""]


def legend(cuda: bool, peak_tflops: float | None) -> list[str]:
    lines = [
        "Columns: tokens/s counts TRL's tokens (non-pad tokens of the chosen and rejected rows, the prompt twice) "
        "from the pairs, so packed and prompt-shared runs are credited the padded layout's work; step ms is the "
        "median step time after warm-up; "
        + ("CUDA peak MiB is torch.cuda.max_memory_allocated of the run's process; " if cuda else
           "peak RSS growth is the run's peak RSS over its imports; ")
        + "ratios are per-round lit/TRL (same round), medians.",
    ]
    if peak_tflops:
        lines.append(f"MFU: 8N FLOPs per token with a live reference, 6N with a cached one (N: every parameter in a "
                     f"matmul, tied embedding once) over {peak_tflops:g} TFLOP/s; MFU+attn adds attention's score and "
                     "value products (12 L d T per trained token, 4 L d T per reference-forward token, full T x T).")
    return lines + [""]
