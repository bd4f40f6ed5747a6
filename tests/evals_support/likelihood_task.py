"""An evaluation task with a continuous score, for tests that must tell two sets of weights apart.

Greedy answers of a tiny random model are often the same before and after a few steps; the summed
log-probability of the reference answers moves with every weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from evals.base import EvalTask, read_jsonl
from evals.generation import render_prompt


class AnswerLogLikelihood(EvalTask):
    """Sum over a verifier file's rows of ``log p(answer | chat-rendered prompt)`` under the model."""

    def __init__(self, data_path: str, name: str = "likelihood") -> None:
        self.data_path = data_path
        """jsonl file of {"prompt", "answer"} rows (the verifier format)."""
        self.name = name
        """Name under which metrics are reported."""

    @torch.no_grad()
    def run(self, model, tokenizer, output_dir: Path) -> dict[str, Any]:
        device = next(model.parameters()).device
        total = 0.0
        rows = [row for _, row in read_jsonl(self.data_path)]
        for row in rows:
            prompt = tokenizer(render_prompt(tokenizer, [{"role": "user", "content": row["prompt"]}]), add_special_tokens=False)["input_ids"]
            answer = tokenizer(row["answer"], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + answer], device=device)  # (1, T)
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)  # (T-1, V)
            targets = ids[0, 1:]  # (T-1,) position t predicts token t + 1
            total += float(logp.gather(-1, targets[:, None])[len(prompt) - 1 :].sum())  # answer tokens only
        return {"logp_sum": total, "n": len(rows)}
