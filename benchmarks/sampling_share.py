"""k samples per prompt: the prompt computed once (``evals.sampling``) against HF's ``num_return_sequences``,
and the chat template's default system prompt left out, measured in one invocation on the same prompts.

    python -m benchmarks.sampling_share --prompts 16 --samples 4 --new_tokens 20 --rounds 3 --out benchmarks/results/sampling_share.json

Each round times the four variants (shared / repeated prompt, with / without the template's default
system prompt) in turn on one thread; the figures are medians of CPU seconds per sample. Both ways
draw the same samples (tests/test_evals_sampling.py), so only the cost differs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def prompts(n: int) -> list[list[dict[str, str]]]:
    """Short arithmetic questions, like the verifier tasks the real-model demo samples."""
    return [[{"role": "user", "content": f"What is {3 + i} + {11 + 2 * i}? Answer with just the number."}] for i in range(n)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new_tokens", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a tiny random model instead of SmolLM2 (smoke run)")
    parser.add_argument("--out", type=str, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from evals.sampling import render_prompt, sample
    from lit_align.models import SmolLM2, TinyModel

    source = TinyModel(hidden_size=64, num_layers=2, num_heads=2) if args.tiny else SmolLM2()
    model, tokenizer = source.load_model().eval(), source.load_tokenizer()
    convs = prompts(args.prompts)
    n_samples = args.prompts * args.samples
    variants = {(share, system): [] for share in (True, False) for system in (False, True)}
    for _ in range(args.rounds):
        for (share, system), times in variants.items():
            start = time.process_time()
            sample(model, tokenizer, convs, num_samples=args.samples, max_new_tokens=args.new_tokens, temperature=1.0,
                   batch_size=args.batch_size, seed=0, template_system=system, share_prompt=share)
            times.append((time.process_time() - start) / n_samples)
    median = {key: statistics.median(times) for key, times in variants.items()}
    lengths = {system: len(tokenizer(render_prompt(tokenizer, convs[0], system), add_special_tokens=False)["input_ids"])
               for system in (False, True)}
    before, after = median[(False, True)], median[(True, False)]
    result = {
        "command": "python -m benchmarks.sampling_share " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": type(source).__name__, "prompts": args.prompts, "samples_per_prompt": args.samples,
        "new_tokens": args.new_tokens, "rounds": args.rounds, "threads": 1, "machine": platform.processor() or platform.machine(),
        "prompt_tokens": {"template_default_system": lengths[True], "no_default_system": lengths[False]},
        "cpu_s_per_sample": {f"{'shared' if share else 'repeated'}_prompt{'_template_system' if system else ''}": round(v, 4)
                             for (share, system), v in median.items()},
        "speedup_shared_prompt": round(median[(False, False)] / median[(True, False)], 2),
        "speedup_shared_prompt_and_no_default_system": round(before / after, 2),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
