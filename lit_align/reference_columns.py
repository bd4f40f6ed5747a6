"""Reference log-prob columns from any model, for ``DatasetColumnReference``.

    python -m lit_align.reference_columns --model runs/big/hf --data train.jsonl --out train_ref.jsonl

Writes each input row again with ``ref_chosen_logps`` / ``ref_rejected_logps``: the summed
log-probs of the chosen and rejected completions under ``--model`` (an HF directory or a GGUF file),
tokenised with THAT model's tokenizer and chat template. A "stronger reference" (Liu, Liu, Cohan
2024, arXiv 2407.13709, RQ3) may so be a model with another vocabulary than the policy's: DPO only
needs sequence-level sums, which any tokenisation of the same text provides. The sums come from
the project's one log-prob path (``lit_align.logprobs.sequence_logps``), as a frozen reference's
would. Rows that the scoring model's length budgets drop (see data/tokenize.py) are left out of the
output and counted; give budgets at least the policy's, so both score the same text.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from lit_align.data.collate import PairCollator
from lit_align.data.formats import to_text_pair
from lit_align.data.sources import iter_rows
from lit_align.data.tokenize import tokenize_pair
from lit_align.logprobs import sequence_logps
from lit_align.models import PretrainedModel


def score_rows(source, data: str, fmt: str = "auto", chat_template: bool = True, max_length: int = 512,
               max_prompt_length: int = 256, batch_size: int = 16, marker: str = "\n\nAssistant:") -> tuple[list[dict], Counter]:
    """Rows of ``data`` that ``source`` can score, each with its two reference columns; and the counts."""
    tokenizer = source.load_tokenizer()
    model = source.load_model().eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = PairCollator(pad)
    counts: Counter = Counter()
    kept: list[tuple[dict, object]] = []
    for location, row in iter_rows(data):
        counts["rows"] += 1
        text = to_text_pair(row, fmt, tokenizer, chat_template, marker, location)
        pair = tokenize_pair(text, tokenizer, len(kept), max_length, max_prompt_length, counts)
        if pair is not None:
            kept.append((row, pair))
    out = []
    with torch.no_grad():
        for start in range(0, len(kept), batch_size):
            chunk = kept[start : start + batch_size]
            logps = sequence_logps(model, collate([p for _, p in chunk]))
            for (row, _), c, r in zip(chunk, logps.chosen.tolist(), logps.rejected.tolist()):
                out.append({**row, "ref_chosen_logps": c, "ref_rejected_logps": r})
    counts["scored"] = len(out)
    return out, counts


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the reference: an HF model directory or a .gguf file")
    parser.add_argument("--data", required=True, help="preference rows (.jsonl / .json / .parquet, any format the data module reads)")
    parser.add_argument("--out", required=True, help="output .jsonl: the rows plus ref_chosen_logps / ref_rejected_logps")
    parser.add_argument("--format", default="auto", choices=["auto", "explicit", "conversational", "implicit"])
    parser.add_argument("--no-chat-template", action="store_true", help="explicit string prompts as they are (as chat_template: false)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-prompt-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.resolve() == Path(args.data).resolve():
        parser.error(f"--out {out} is the input file: write the columns to a new file")
    rows, counts = score_rows(PretrainedModel(args.model), args.data, args.format, not args.no_chat_template,
                              args.max_length, args.max_prompt_length, args.batch_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")  # complete or absent: never a half-written file
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows))
    partial.replace(out)
    print(f"[reference_columns] {counts['scored']} of {counts['rows']} rows scored by {args.model} -> {out} ({dict(counts)})")
    return out


if __name__ == "__main__":
    main()
