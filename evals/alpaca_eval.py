"""AlpacaEval-style evaluation (Li et al. 2023; AlpacaEval 2 with length control, Dubois et al. 2024).

The model answers each instruction (chat template, resumable ``model_outputs.jsonl``); a judge
compares its output with a baseline's (``m`` = first shown, ``M`` = second). With a logprob-capable
endpoint the preference is weighted by the judge's probabilities (weighted_alpaca_eval_gpt4_turbo),
otherwise it is the discrete verdict. The two outputs are swapped for a deterministic half of the
instructions (seeded by the instruction text) and mapped back with ``3 - preference``; identical
outputs are not sent (preference 1.5). Annotations are saved in the official format.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from evals.alpaca_metrics import winrate_metrics
from evals.base import TaskFailed, write_json_atomic
from evals.generation import AnswerStore, GenerationTask
from evals.judge.client import JudgeClient, JudgeRequest
from evals.judge.coverage import check_min_coverage, coverage_reason
from evals.judge.parsing import alpaca_preference, alpaca_problem

DEFAULT_PROMPT_VERSION = "lit-align-alpaca-eval-v1"
DEFAULT_SYSTEM = ("You are an impartial assistant that ranks the outputs of large language models by how good a "
                  "human would find them.")
DEFAULT_USER = """Rank the outputs of two models for the instruction below, from a human's point of view.

## Instruction

{
    "instruction": \"\"\"{instruction}\"\"\",
}

## Model Outputs

The outputs are unordered; each has a model identifier.

{
    {
        "model_identifier": "m",
        "output": \"\"\"{output_1}\"\"\"
    },
    {
        "model_identifier": "M",
        "output": \"\"\"{output_2}\"\"\"
    }
}

## Task

Select the model whose output is best. Answer with its model identifier only, nothing else (no quotes, no spaces, no new lines): m or M.

## Best Model Identifier
"""
_PLACEHOLDER = re.compile(r"\{(instruction|output_1|output_2)\}")
_CHATML = re.compile(r"<\|im_start\|>(\w+)\n(.*?)\n?<\|im_end\|>", re.S)


def fill(template: str, values: dict[str, str]) -> str:
    """Replace the three placeholders in one pass (templates contain literal braces; outputs may too)."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def load_prompt(path: str | None) -> tuple[list[tuple[str, str]], str]:
    """(role, template) messages and the prompt version; files use AlpacaEval's ``<|im_start|>role`` form."""
    if path is None:
        return [("system", DEFAULT_SYSTEM), ("user", DEFAULT_USER)], DEFAULT_PROMPT_VERSION
    import hashlib

    raw = Path(path).read_text(encoding="utf-8")
    messages = [(role, text) for role, text in _CHATML.findall(raw)]
    if not messages:
        messages = [("user", raw)]
    if not any("{output_1}" in t for _, t in messages) or not any("{output_2}" in t for _, t in messages):
        raise ValueError(f"{path}: judge prompt lacks the {{output_1}} / {{output_2}} placeholders")
    return messages, f"{Path(path).name}@sha256:{hashlib.sha256(raw.encode()).hexdigest()[:12]}"


def load_records(path: str | Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """A JSON list or a jsonl file of objects, each with the ``required`` string fields."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from None
    for i, row in enumerate(rows):
        for key in required:
            if not isinstance(row.get(key), str):
                raise ValueError(f"{path}: row {i}: field {key!r} missing or not a string")
    return rows


def is_swapped(instruction: str, seed: int) -> bool:
    """Deterministic coin per instruction (``random.Random`` seeds strings through SHA-512)."""
    return random.Random(f"alpaca-swap|{seed}|{instruction}").random() < 0.5


class AlpacaEval(GenerationTask):
    """Pairwise win rate against a baseline's outputs, judged by an OpenAI-compatible endpoint."""

    def __init__(
        self,
        instructions_file: str,
        baseline_outputs_file: str,
        judge: JudgeClient,
        judge_prompt_file: str | None = None,
        use_logprobs: bool = True,
        name: str = "alpaca_eval",
        generator: str = "model",
        max_new_tokens: int = 2048,
        temperature: float = 0.0,
        batch_size: int = 8,
        difficulty_file: str | None = None,
        gamed_annotations_files: list[str] | None = None,
        min_coverage: float = 1.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            instructions_file: AlpacaEval instructions (json list or jsonl with "instruction").
            baseline_outputs_file: Baseline outputs {"instruction", "output", "generator"}, one per instruction.
            judge: The judge endpoint (evals.judge.JudgeClient).
            judge_prompt_file: An AlpacaEval prompt file (e.g. alpaca_eval_clf_prompt.txt); None: the project's
                default.
            use_logprobs: Ask the judge for one token with its top 5 log-probs and weight the preference by them;
                False: the discrete verdict of a reply of up to 50 tokens (also read when no log-probs come back).
            name: Name under which metrics are reported.
            generator: Name of the evaluated model in annotations.
            max_new_tokens: Generation budget per output.
            temperature: Generation temperature (0: greedy).
            batch_size: Instructions generated together.
            difficulty_file: csv with instruction_difficulty (by index or instruction): enables the full LC GLM.
            gamed_annotations_files: Annotations of the gamed (verbose, concise) baselines vs the baseline: full
                LC GLM.
            min_coverage: Fraction of instructions that need a valid preference for the task to be complete; the
                coverage is reported next to the win rate. 1.0: all of them.
            kwargs: seed, limit, use_vllm, system_prompt, template_system (evals.generation.GenerationTask).
        """
        super().__init__(max_new_tokens=max_new_tokens, batch_size=batch_size, **kwargs)
        self.instructions_file = instructions_file
        self.baseline_outputs_file = baseline_outputs_file
        self.judge = judge
        self.judge_prompt_file = judge_prompt_file
        self.use_logprobs = use_logprobs
        self.name = name
        self.generator = generator
        self.temperature = temperature
        self.difficulty_file = difficulty_file
        self.gamed_annotations_files = gamed_annotations_files
        self.min_coverage = check_min_coverage(type(self).__name__, min_coverage)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["judge"] = self.judge.describe()
        out["prompt_version"] = load_prompt(self.judge_prompt_file)[1]
        return out

    def _baseline(self, instructions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = load_records(self.baseline_outputs_file, ("instruction", "output"))
        by_instruction = {r["instruction"]: r for r in rows}
        out = []
        for i, ins in enumerate(instructions):
            if ins["instruction"] not in by_instruction:
                raise ValueError(f"{self.baseline_outputs_file}: no output for instruction {i} "
                                 f"({ins['instruction'][:60]!r}) of {self.instructions_file}")
            out.append(by_instruction[ins["instruction"]])
        return out

    def run(self, model, tokenizer, output_dir: Path) -> dict[str, Any]:
        from evals.alpaca_lc import lc_metrics

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        instructions = load_records(self.instructions_file, ("instruction",))[: self.limit]
        baseline = self._baseline(instructions)
        messages, prompt_version = load_prompt(self.judge_prompt_file)

        store = AnswerStore(output_dir / "model_outputs.jsonl", id_key="index")
        items = [{"id": i, "turns": [r["instruction"]], "temperature": self.temperature} for i, r in enumerate(instructions)]
        outputs = self.answer(model, tokenizer, items, store)
        answers_identity = store.identity

        rows, jobs = [], []
        for i, (ins, base) in enumerate(zip(instructions, baseline)):
            output = outputs[i][0]
            row = {"index": ins.get("index", i), "instruction": ins["instruction"], "dataset": ins.get("dataset"), "output_1": base["output"],
                   "generator_1": base.get("generator", "baseline"), "output_2": output, "generator_2": self.generator,
                   "annotator": self.judge.model, "model": answers_identity, "is_swapped": is_swapped(ins["instruction"], self.seed), "preference": None}
            rows.append(row)
            if output == base["output"]:
                row["preference"] = 1.5  # identical outputs: a draw, not worth a request
                continue
            first, second = (output, base["output"]) if row["is_swapped"] else (base["output"], output)
            values = {"instruction": ins["instruction"], "output_1": first, "output_2": second}
            request = JudgeRequest(messages=tuple((role, fill(t, values)) for role, t in messages), temperature=0.0,
                                   max_tokens=1 if self.use_logprobs else 50, logprobs=self.use_logprobs,
                                   top_logprobs=5 if self.use_logprobs else None)
            jobs.append((row, request))
        responses, stats = self.judge.judge([r for _, r in jobs], output_dir / "judge_cache.jsonl",
                                            validate=lambda r: alpaca_problem(r.content, r.top_logprobs))
        parse_failures = 0
        for (row, _), resp in zip(jobs, responses):
            pref = alpaca_preference(resp.content, resp.top_logprobs) if resp.error is None and resp.invalid is None else None
            row["raw_completion"] = {"content": resp.content, "top_logprobs": resp.top_logprobs, "error": resp.error,
                                     "invalid": resp.invalid}
            if pref is None:
                parse_failures += resp.error is None
                continue
            row["preference"] = 3.0 - pref if row["is_swapped"] else pref
        write_json_atomic(output_dir / "annotations.json", rows)

        judged = [r for r in rows if r["preference"] is not None]
        metrics = winrate_metrics([r["preference"] for r in judged])
        metrics["avg_length"] = int(sum(len(r["output_2"]) for r in rows) / max(len(rows), 1))
        metrics.update(lc_metrics(judged, self.difficulty_file, self.gamed_annotations_files, self.seed))
        metrics.update(parse_failures=parse_failures,
                       **{f"judge_{k}": v for k, v in vars(stats).items()})
        # a win rate over the answered part is no result
        extra, reason = coverage_reason(self.name, self.judge.model, responses, len(rows), len(judged), self.min_coverage,
                                        str(output_dir / "annotations.json"))
        metrics.update(extra)
        write_json_atomic(output_dir / "metrics.json", {"metrics": metrics, "judge": self.judge.model,
                                                        "prompt_version": prompt_version})
        if reason is not None:
            raise TaskFailed(reason, metrics)
        return metrics
