"""SFT alone: the chosen rows only against every row of the pair batch (the behaviour before).

    python -m benchmarks.sft_rows --steps 20 --rounds 3

Same model (the demo's SFT shape), same batches, same process; the two settings alternate every
round and the ratio is per-round, median over rounds. Losses agree exactly (checked); only the
forward / backward work differs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sft_rows", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per setting and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32, help="pairs per step (the demo's)")
    args = p.parse_args(argv)

    from lit_align.data import PreferenceDataModule
    from lit_align.losses import SFT
    from lit_align.models import TinyModel
    from lit_align.module import PreferenceModule
    from lit_align.reference import NoReference
    from benchmarks.demos.sort_task import write_task

    class SFTAllRows(SFT):
        uses_rejected = True  # forwards the rejected rows too, as every pair loss does

    source = TinyModel(hidden_size=128, num_layers=4, num_heads=4, seed=0)  # configs/demo/sft.yaml
    work = Path(tempfile.mkdtemp(prefix="sft_rows_"))
    task = write_task(work / "data", train=args.batch_size * args.steps, val=8, test=8)
    source.load_tokenizer().save_pretrained(work / "tok")
    data = PreferenceDataModule(train_path=str(task["train"]), batch_size=args.batch_size, max_length=64,
                                max_prompt_length=48, tokenizer=str(work / "tok"))
    data.setup("fit")
    batches = list(data.train_dataloader())[: args.steps]
    seconds: dict[str, list[float]] = {"chosen rows": [], "all rows": []}
    losses: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for name, loss in ([("chosen rows", SFT()), ("all rows", SFTAllRows())][:: 1 if r % 2 == 0 else -1]):
            torch.manual_seed(0)
            module = PreferenceModule(model=source, loss=loss, reference=NoReference(), lr=1e-3)
            module.configure_model()
            optimizer = torch.optim.AdamW(module.policy.parameters(), lr=1e-3)
            trace = []
            start = time.perf_counter()
            for batch in batches:
                out = module.forward_step(batch)[2].losses.mean()
                out.backward()
                optimizer.step()
                optimizer.zero_grad()
                trace.append(float(out))
            seconds[name].append(time.perf_counter() - start)
            losses.setdefault(name, trace)
    diff = max(abs(a - b) for a, b in zip(losses["chosen rows"], losses["all rows"]))
    ratio = statistics.median(b / a for a, b in zip(seconds["chosen rows"], seconds["all rows"]))
    table = "\n".join([
        f"Command: `python -m benchmarks.sft_rows --steps {args.steps} --rounds {args.rounds} --batch-size {args.batch_size}`",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; max |loss difference| over steps: {diff:.1e}",
        "",
        "| setting | ms/step (median) | speed-up |",
        "|---|---:|---:|",
        f"| all rows (before) | {1000 * statistics.median(seconds['all rows']) / args.steps:.0f} | 1.00x |",
        f"| chosen rows only | {1000 * statistics.median(seconds['chosen rows']) / args.steps:.0f} | {ratio:.2f}x |",
    ])
    print(table)
    return table


if __name__ == "__main__":
    main()
