"""lit-align against TRL's DPOTrainer on the same model, data, hyper-parameters and sample order.

    python -m benchmarks.trl_vs_lit --rounds 3 --steps 12 --out benchmarks/results/cpu.md

One invocation: writes a tiny Llama-shaped model (save_tiny) and a preference dataset, then for each
round runs every configuration of lit-align and its TRL counterpart alternately (live reference
against live, cached against TRL's precompute_ref_log_probs), each run in a fresh subprocess. It
first checks that the two produce the same loss trajectory (max abs difference per configuration),
then reports, as medians over rounds:

- tokens/s counted as TRL counts them (non-pad tokens of the chosen and rejected rows, the prompt
  counted twice), from the pairs themselves, so packed and prompt-shared runs are credited exactly
  the padded work; the first ``--warmup`` steps are excluded;
- step time; peak RSS growth of the run's process over its imports (CPU) or the CUDA peak (GPU);
- MFU on a GPU: FLOPs per token 8N with a live reference (6N training + 2N reference forward), 6N
  with a cached one, against ``--peak-tflops``;
- the ratio of each lit-align row to its TRL counterpart, measured in the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.configs import CONFIGS, Config
from benchmarks.workload import Shape, prepare, tokens_per_step

REPO = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.trl_vs_lit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), help="rows to run")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians reported)")
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate-size", type=int, default=1024)
    p.add_argument("--pairs", type=int, default=512, help="dataset size (steps x batch must fit in one epoch)")
    p.add_argument("--max-length", type=int, default=1024, help="no pair is truncated at the default")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads per run")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak (e.g. 989 for H100 bf16 dense) for MFU")
    p.add_argument("--workdir", type=Path, default=None, help="where model, data and runs go (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    p.add_argument("--trajectory-tolerance", type=float, default=1e-4, help="max |loss diff| for fp32 rows")
    return p.parse_args(argv)


def run_child(framework: str, config: Config, args: argparse.Namespace, paths: dict[str, Path], workdir: Path) -> dict:
    payload = {"model_dir": str(paths["model"]), "train_path": str(paths["train"]), "workdir": str(workdir),
               "batch_size": args.batch_size, "steps": args.steps, "lr": args.lr, "beta": args.beta,
               "max_length": args.max_length, "threads": args.threads}
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run_one", framework, json.dumps(config.to_json()),
                           json.dumps(payload)], cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{framework} {config.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def trl_counterpart(config: Config) -> Config:
    """TRL's closest equivalent: live or precomputed reference, fp32 or bf16 (no packing / sharing / compile)."""
    return Config(name=f"trl[{'precomputed' if config.cached else 'live'}{'+bf16' if config.bf16 else ''}]",
                  cached=config.cached, bf16=config.bf16)


def summarize(result: dict, tokens: list[int], warmup: int) -> dict:
    ends = result["step_ends"]
    seconds = ends[-1] - ends[warmup - 1]
    timed = len(ends) - warmup
    return {"tok_s": sum(tokens[warmup:len(ends)]) / seconds, "step_s": seconds / timed,
            "rss_mib": result["rss_peak_mib"] - result["rss_start_mib"], "cuda_mib": result["cuda_peak_mib"]}


def main(argv: list[str] | None = None) -> str:
    args = parse(argv)
    if args.warmup < 1 or args.steps <= args.warmup or args.steps * args.batch_size > args.pairs:
        raise SystemExit("need 1 <= warmup < steps and steps x batch-size <= pairs (one epoch, one order)")
    shape = Shape(args.hidden_size, args.layers, args.heads, args.intermediate_size, args.pairs, args.max_length)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trl_vs_lit_"))
    paths = prepare(workdir, shape)
    tokens = tokens_per_step(paths["train"], args.batch_size, args.steps)
    configs = [CONFIGS[name] for name in args.configs]
    pairs = {c.name: trl_counterpart(c) for c in configs}
    runs: dict[str, list[dict]] = {}
    losses: dict[str, list[float]] = {}
    started = time.time()
    for r in range(args.rounds):
        # alternate: each lit row right after (or before, on odd rounds) its TRL reference run
        trl_done: set[str] = set()
        for config in configs:
            ref = pairs[config.name]
            sequence = [("trl", ref), ("lit", config)] if r % 2 == 0 else [("lit", config), ("trl", ref)]
            for framework, cfg in sequence:
                if framework == "trl" and ref.name in trl_done:
                    continue  # one TRL run per counterpart and round
                run_dir = workdir / f"round{r}" / f"{framework}_{cfg.name}"
                run_dir.mkdir(parents=True, exist_ok=True)
                result = run_child(framework, cfg, args, paths, run_dir)
                key = f"{framework}:{cfg.name}"
                runs.setdefault(key, []).append(summarize(result, tokens, args.warmup))
                losses.setdefault(key, result["losses"])
                trl_done.add(ref.name) if framework == "trl" else None
                print(f"[round {r}] {key}: {runs[key][-1]['tok_s']:.0f} tok/s, {runs[key][-1]['step_s'] * 1000:.0f} ms/step, "
                      f"loss[-1] {result['losses'][-1]:.6f} ({time.time() - started:.0f} s)", flush=True)
    table = report(args, shape, configs, pairs, runs, losses, tokens)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return table


def report(args, shape: Shape, configs: list[Config], pairs: dict[str, Config], runs: dict, losses: dict,
           tokens: list[int]) -> str:
    import platform

    import torch

    med = lambda key, field: statistics.median(run[field] for run in runs[key])  # noqa: E731
    ratio = lambda a, b, field: statistics.median(x[field] / y[field] for x, y in zip(runs[a], runs[b]))  # noqa: E731
    cuda = torch.cuda.is_available()
    n = shape.params()
    device = torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()} CPU, {args.threads} threads"
    command = "python -m benchmarks.trl_vs_lit " + " ".join(sys.argv[1:]) if argv_is_cli() else "(called from Python)"
    lines = [
        f"# lit-align vs TRL {trl_version()} DPOTrainer",
        "",
        f"Command: `{command}`",
        "",
        f"Device: {device}; torch {torch.__version__}. Model: tiny Llama-shaped, hidden {shape.hidden_size}, "
        f"{shape.num_layers} layers, {shape.num_heads} heads, MLP {shape.intermediate_size}, N = {n / 1e6:.2f} M "
        f"parameters. Data: {shape.pairs} sorting pairs of mixed length, batch {args.batch_size} pairs, "
        f"{sum(tokens) / len(tokens):.0f} tokens per step on average (TRL's count). {args.steps} steps per run "
        f"({args.warmup} warm-up steps not timed), {args.rounds} alternating rounds, medians; ratios are per-round "
        "lit/TRL, medians.",
        "",
        "Loss trajectories (same settings, first round): max |lit - TRL| over all steps",
        "",
        "| config | vs | max abs loss diff | ok |",
        "|---|---|---|---|",
    ]
    for c in configs:
        a, b = losses[f"lit:{c.name}"], losses[f"trl:{pairs[c.name].name}"]
        diff = max(abs(x - y) for x, y in zip(a, b))
        tol = args.trajectory_tolerance if not c.bf16 else 5e-2
        lines.append(f"| {c.name} | {pairs[c.name].name} | {diff:.2e} | {'yes' if diff <= tol else 'NO'} (tol {tol:g}) |")
    mem_field, mem_label = ("cuda_mib", "CUDA peak MiB") if cuda else ("rss_mib", "peak RSS growth MiB")
    header = f"| config | tokens/s | step ms | {mem_label} | tokens/s vs TRL | memory vs TRL |"
    if cuda and args.peak_tflops:
        header += " MFU |"
    lines += ["", header, "|---" * (header.count("|") - 1) + "|"]
    rows = [(f"trl:{t.name}", t, None) for t in {p.name: p for p in pairs.values()}.values()]
    rows += [(f"lit:{c.name}", c, f"trl:{pairs[c.name].name}") for c in configs]
    for key, cfg, ref in rows:
        line = (f"| {key} | {med(key, 'tok_s'):.0f} | {med(key, 'step_s') * 1000:.0f} | {med(key, mem_field):.0f} | "
                + (f"{ratio(key, ref, 'tok_s'):.2f}x | {ratio(key, ref, mem_field):.2f}x |" if ref else "1.00x | 1.00x |"))
        if cuda and args.peak_tflops:
            flops = (6 if cfg.cached else 8) * n * med(key, "tok_s")
            line += f" {100 * flops / (args.peak_tflops * 1e12):.1f}% |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def argv_is_cli() -> bool:
    return Path(sys.argv[0]).name in ("trl_vs_lit.py", "-m") or sys.argv[0].endswith("trl_vs_lit.py")


def trl_version() -> str:
    import trl

    return trl.__version__


if __name__ == "__main__":
    main()
