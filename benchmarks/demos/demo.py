"""The embedded default, end to end: ``python -m benchmarks.demos.demo``.

1. writes the synthetic sorting task (train / val / test) under ``runs/demo/data``;
2. SFT of a fresh tiny model on the correct answers     (configs/demo/sft.yaml);
3. the SFT model answers the DPO prompts greedily and the verifier labels them: its own
   well-formed mistakes become the rejected answers (on-policy negatives);
4. DPO from the SFT model against a frozen copy of it   (configs/demo/dpo.yaml);
5. ``cli.py evaluate`` on both: held-out reward metrics and the verifier's exact-match accuracy;
6. prints reference vs tuned, and where the artifacts are.
Training and evaluation are the same ``cli.py`` commands a user would type; the demo sequences them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # benchmarks/<group>/<file>
ROWS = [
    ("verifier accuracy (test, exact match)", "sort_verifier/accuracy"),
    ("reward accuracy (val)", "val/rewards/accuracies"),
    ("reward margin (val)", "val/rewards/margins"),
    ("log p(chosen) > log p(rejected) (val)", "val/logps/accuracies"),
    ("mean log p(chosen) (val)", "val/logps/chosen"),
    ("DPO loss (val)", "val/loss"),
]


def run(cli_main, *args: str) -> None:
    print(f"\n$ python cli.py {' '.join(args)}", flush=True)
    cli_main(list(args))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="where data, runs and evaluations go")
    parser.add_argument("--sft-steps", type=int, default=None, help="override configs/demo/sft.yaml max_steps")
    parser.add_argument("--dpo-steps", type=int, default=None, help="override configs/demo/dpo.yaml max_steps")
    parser.add_argument("--dpo-prompts", type=int, default=1500, help="train prompts the SFT model answers for DPO pairs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation and of both fits")
    args = parser.parse_args(argv)

    import cli
    from benchmarks.demos.sort_task import write_task

    started = time.perf_counter()
    out = Path(args.out)
    data = write_task(out / "data", train=4000, val=200, test=500)
    configs = REPO / "configs" / "demo"
    common = [f"--data.init_args.train_path={data['train']}", f"--data.init_args.val_path={data['val']}",
              f"--trainer.logger.init_args.save_dir={out}", f"--seed_everything={args.seed}",
              "--overwrite=true"]  # a rerun of the demo replaces the previous demo's runs (a user's second fit would stop)
    sft = ["fit", "--config", str(configs / "sft.yaml"), *common, f"--model.model.init_args.seed={args.seed}"]
    sft += [f"--trainer.max_steps={args.sft_steps}"] if args.sft_steps else []
    run(cli.main, *sft)
    pairs = own_mistake_pairs(out / "sft" / "hf", data["train"], out / "data" / "dpo_train.jsonl", args.dpo_prompts)
    dpo = ["fit", "--config", str(configs / "dpo.yaml"), *common, f"--data.init_args.train_path={pairs}",
           f"--model.model.init_args.path={out / 'sft' / 'hf'}"]
    dpo += [f"--trainer.max_steps={args.dpo_steps}"] if args.dpo_steps else []
    run(cli.main, *dpo)

    results = {}
    for name, weights in (("reference (SFT)", out / "sft" / "hf"), ("tuned (DPO)", out / "dpo" / "hf")):
        target = out / "eval" / name.split()[0]
        run(cli.main, "evaluate", "--config", str(out / "dpo" / "config.yaml"), "--config", str(configs / "eval.yaml"),
            f"--tasks.init_args.data_path={data['test']}", "--ckpt_path", str(weights), "--output_dir", str(target))
        results[name] = json.loads((target / "results.json").read_text())["metrics"]
    print_table(results, out, time.perf_counter() - started)
    return results


def own_mistake_pairs(model_dir: Path, train: Path, target: Path, n: int) -> Path:
    """Greedy answers of the SFT model on ``n`` train prompts, labelled by the verifier."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.demos.sort_task import label_own_mistakes
    from evals.generation import generate
    from lit_align.data.sources import read_jsonl

    rows = read_jsonl(train)[:n]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    outputs = generate(model, tokenizer, [[{"role": "user", "content": r["prompt"]}] for r in rows], 16, 0.0, 128)
    labelled, own = label_own_mistakes(rows, outputs)
    target.write_text("".join(json.dumps(r) + "\n" for r in labelled))
    print(f"\n[demo] SFT model wrong on {sum(o.strip() != r['answer'] for o, r in zip(outputs, rows))} of {len(rows)} "
          f"DPO prompts; {own} of its well-formed mistakes are the rejected answers ({target})", flush=True)
    return target


def paired_verdicts(reference: Path, tuned: Path) -> tuple[int, int, float]:
    """Prompts the tuned model gets right and the reference wrong (and back), with McNemar's exact p."""
    from benchmarks.studies.report import discordant, mcnemar, verdicts

    fixed, broken = discordant(verdicts(reference), verdicts(tuned))
    return fixed, broken, mcnemar(fixed, broken)


def print_table(results: dict, out: Path, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lit-align demo: DPO vs its reference on the sorting task ({seconds:.0f} s)")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    for label, key in ROWS:
        table.add_row(label, *(f"{results[name].get(key, float('nan')):.3f}" for name in results))
    console = Console()
    console.print(table)
    console.print("Reward metrics of the reference are 0 by definition (it is compared with itself).")
    fixed, broken, p = paired_verdicts(out / "eval" / "reference", out / "eval" / "tuned")
    console.print(f"Test prompts DPO fixed: {fixed}, broke: {broken} (exact McNemar test, two-sided p = {p:.2g}).")
    console.print(f"artifacts: {out}/sft and {out}/dpo (config.yaml, checkpoints/last.ckpt, hf/, metrics.csv), "
                  f"{out}/eval/*/results.json, answers in {out}/eval/*/sort_verifier/answers.jsonl")


if __name__ == "__main__":
    main()
