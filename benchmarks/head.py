"""The log-prob head alone: lit-align's ``chunked_logps`` against full logits over every position.

    python -m benchmarks.head --vocab 32000 --hidden 256 --pairs 4 --length 256 --rounds 3

The peer is the plain way (TRL's without its triton kernel): ``log_softmax(lm_head(hidden))`` over
all (2B, T) positions, then gather and mask. lit-align gathers the scored (completion) positions
first and runs the head on them only, in chunks recomputed in backward. Each variant runs forward
and backward in a fresh subprocess (peak RSS growth over the inputs), alternating, rounds of each;
sums are checked equal first. One untimed warm-up call, then the median of ``--repeats``. Prompts are half of each row, as in the GPU workload.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"full logits (peer)": "full", "lit chunked (1024)": 1024, "lit unchunked": None}
REPO = Path(__file__).resolve().parents[1]


def inputs(vocab: int, hidden: int, pairs: int, length: int):
    import torch

    from lit_align.batch import PreferenceBatch

    g = torch.Generator().manual_seed(0)
    rows = 2 * pairs
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    completion = torch.zeros(rows, length, dtype=torch.long)
    for r in range(rows):  # prompt = first half, completion 40-50% of the row, then padding
        completion[r, length // 2 : length // 2 + length * (4 + r % 2) // 10] = 1
    attention = torch.ones_like(ids)
    batch = PreferenceBatch(ids, attention, completion, torch.arange(pairs))
    head = torch.nn.Linear(hidden, vocab, bias=False)
    torch.nn.init.normal_(head.weight, std=0.02, generator=g)
    states = torch.randn(rows, length, hidden, generator=g).requires_grad_(True)
    return states, head, batch


def full_logits_sums(states, head, batch):
    import torch

    logp = torch.log_softmax(head(states[:, :-1]).float(), dim=-1)  # (2B, T-1, V): every position
    token = logp.gather(-1, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (token * batch.completion_mask[:, 1:]).sum(-1)


def child(variant: str, args: dict) -> dict:
    import torch

    from benchmarks.measure import max_rss_mib
    from lit_align.logprobs import chunked_logps

    torch.set_num_threads(args["threads"])
    states, head, batch = inputs(args["vocab"], args["hidden"], args["pairs"], args["length"])
    start_rss = max_rss_mib()
    chunk = VARIANTS[variant]

    def step() -> torch.Tensor:
        if chunk == "full":
            sums = full_logits_sums(states, head, batch)
        else:
            out = chunked_logps(states, head, batch, chunk_size=chunk)
            sums = torch.cat([out.chosen, out.rejected])
        sums.sum().backward()
        return sums.detach()

    step()  # warm-up: the first call pays one-time costs (kernel selection, checkpoint setup)
    seconds = []
    for _ in range(args["repeats"]):
        started = time.perf_counter()
        sums = step()
        seconds.append(time.perf_counter() - started)
    return {"seconds": statistics.median(seconds), "rss_mib": max_rss_mib() - start_rss, "sums": sums.tolist()}


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m benchmarks.head", description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per run after one warm-up (median)")
    args = p.parse_args(argv)
    payload = json.dumps(vars(args))
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for variant in list(VARIANTS)[:: 1 if r % 2 == 0 else -1]:
            proc = subprocess.run([sys.executable, "-m", "benchmarks.head", "--child", variant, payload], cwd=REPO,
                                  capture_output=True, text=True, check=True)
            runs[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    peer = runs["full logits (peer)"]
    diff = max(abs(a - b) for run in runs.values() for a, b in zip(run[0]["sums"], peer[0]["sums"]))
    lines = [
        f"Command: `python -m benchmarks.head --vocab {args.vocab} --hidden {args.hidden} --pairs {args.pairs} "
        f"--length {args.length} --rounds {args.rounds} --threads {args.threads} --repeats {args.repeats}`",
        "",
        f"Forward + backward of the head over {2 * args.pairs} rows x {args.length} positions (prompt half of each row), "
        f"vocabulary {args.vocab}, hidden {args.hidden}; max |sum difference| vs the peer {diff:.1e}. "
        "Medians over rounds; ratios per round against the peer.",
        "",
        "| variant | ms | peak RSS growth MiB | speed vs peer | memory vs peer |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, run in runs.items():
        speed = statistics.median(b["seconds"] / a["seconds"] for a, b in zip(run, peer))
        memory = statistics.median(a["rss_mib"] / max(b["rss_mib"], 1e-9) for a, b in zip(run, peer))
        lines.append(f"| {name} | {1000 * statistics.median(x['seconds'] for x in run):.0f} | "
                     f"{statistics.median(x['rss_mib'] for x in run):.0f} | {speed:.2f}x | {memory:.2f}x |")
    table = "\n".join(lines) + "\n"
    print(table)
    return table


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], json.loads(sys.argv[3]))))
    else:
        main()
