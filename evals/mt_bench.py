"""MT-Bench (Zheng et al. 2023, NeurIPS Datasets and Benchmarks): two-turn questions judged by an LLM.

Answers are generated through the chat template (turn 2 sees the model's own turn-1 answer, per
category temperature), stored in ``answers.jsonl`` (FastChat model_answer format, resumable), then
judged by an OpenAI-compatible endpoint: single-answer grading (default) or pairwise against a
baseline's answers with the order swapped. Per-item judgments go to ``judgments.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from evals.base import TaskFailed, write_json_atomic, write_jsonl_atomic
from evals.generation import AnswerStore, GenerationTask
from evals.judge.client import JudgeClient
from evals.judge.coverage import check_min_coverage, coverage_reason
from evals.judge.mt_bench_prompts import load_judge_prompts
from evals.judge.parsing import pair_verdict_problem, parse_pair_verdict, parse_rating, rating_problem
from evals.mt_bench_data import DEFAULT_TEMPERATURE, MT_BENCH_TEMPERATURES, load_answers, load_questions
from evals.mt_bench_judging import pair_outcome, pair_requests, pair_scores, single_requests, single_scores


class MTBench(GenerationTask):
    """MT-Bench-style generation and LLM-judge grading of an in-memory model."""

    def __init__(
        self,
        question_file: str,
        judge: JudgeClient,
        reference_file: str | None = None,
        judge_prompts_file: str | None = None,
        mode: Literal["single", "pairwise"] = "single",
        baseline_answers_file: str | None = None,
        name: str = "mt_bench",
        model_id: str = "model",
        max_new_tokens: int = 1024,
        temperatures: dict[str, float] | None = None,
        batch_size: int = 8,
        judge_max_tokens: int = 2048,
        min_coverage: float = 1.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            question_file: MT-Bench question.jsonl ({"question_id", "category", "turns"}).
            judge: The judge endpoint (evals.judge.JudgeClient).
            reference_file: Reference answers (FastChat reference_answer/gpt-4.jsonl) for math, reasoning,
                coding.
            judge_prompts_file: Official judge_prompts.jsonl; None uses the project's templates of the same
                structure.
            mode: single: rate each turn 1-10; pairwise: compare with ``baseline_answers_file``, both orders.
            baseline_answers_file: FastChat answer jsonl of the model compared against (pairwise mode).
            name: Name under which metrics are reported.
            model_id: model_id written in answers.jsonl.
            max_new_tokens: Generation budget per turn (FastChat: 1024).
            temperatures: Per-category temperature overrides of FastChat's table (unknown categories: 0.7).
            batch_size: Conversations generated together.
            judge_max_tokens: Judge reply budget (FastChat: 2048); the judge runs at temperature 0.
            min_coverage: Fraction of judged items (single: question turns; pairwise: question turns with both
                orders) that need a valid, in-range verdict for the task to be complete; the coverage is reported
                next to the score. 1.0: all of them.
            kwargs: seed, limit, use_vllm, system_prompt, template_system (evals.generation.GenerationTask).
        """
        super().__init__(max_new_tokens=max_new_tokens, batch_size=batch_size, **kwargs)
        self.question_file = question_file
        self.judge = judge
        self.reference_file = reference_file
        self.judge_prompts_file = judge_prompts_file
        self.mode = mode
        self.baseline_answers_file = baseline_answers_file
        self.name = name
        self.model_id = model_id
        self.temperatures = temperatures
        self.judge_max_tokens = judge_max_tokens
        self.min_coverage = check_min_coverage(type(self).__name__, min_coverage)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["judge"] = self.judge.describe()
        out["prompt_version"] = load_judge_prompts(self.judge_prompts_file)[1]
        return out

    def temperature(self, category: str) -> float:
        table = {**MT_BENCH_TEMPERATURES, **(self.temperatures or {})}
        return table.get(category, DEFAULT_TEMPERATURE)

    def run(self, model, tokenizer, output_dir: Path) -> dict[str, Any]:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        questions = load_questions(self.question_file)[: self.limit]
        prompts, prompt_version = load_judge_prompts(self.judge_prompts_file)
        references = load_answers(self.reference_file) if self.reference_file else {}
        baseline = load_answers(self.baseline_answers_file) if self.baseline_answers_file else None
        if self.mode == "pairwise" and baseline is None:
            raise ValueError("MTBench mode='pairwise' needs baseline_answers_file")

        store = AnswerStore(output_dir / "answers.jsonl", id_key="question_id")
        items = [{"id": q["question_id"], "turns": q["turns"], "temperature": self.temperature(q["category"]),
                  "category": q["category"]} for q in questions]
        answers = self.answer(model, tokenizer, items, store,
                              extra=lambda it: {"category": it["category"], "model_id": self.model_id})
        answers_identity = store.identity

        if self.mode == "single":
            jobs = single_requests(questions, answers, references, prompts, self.judge_max_tokens)
        else:
            jobs = pair_requests(questions, answers, baseline, references, prompts, self.judge_max_tokens)
        problem = (lambda r: rating_problem(r.content)) if self.mode == "single" else (lambda r: pair_verdict_problem(r.content))
        responses, stats = self.judge.judge([j["request"] for j in jobs], output_dir / "judge_cache.jsonl", validate=problem)

        rows = []
        for job, resp in zip(jobs, responses):
            row = {k: v for k, v in job.items() if k != "request"}
            row.update(judge=self.judge.model, model=answers_identity, judgment=resp.content, error=resp.error,
                       invalid=resp.invalid)
            valid = resp.error is None and resp.invalid is None  # an out-of-range [[999]] is no rating
            if self.mode == "single":
                row["rating"] = parse_rating(resp.content) if valid else None
            else:
                row["verdict"] = parse_pair_verdict(resp.content) if valid else None
            rows.append(row)
        write_jsonl_atomic(output_dir / "judgments.jsonl", rows)

        if self.mode == "single":
            metrics = single_scores(rows)
            chart_series = {"score": {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("category/")}}
            chart_title, ylim = f"MT-Bench single grading ({self.judge.model})", (0, 10)
        else:
            outcomes = []
            for first, second in zip(rows[0::2], rows[1::2]):
                outcome, inconsistent = pair_outcome(first["verdict"], second["verdict"])
                outcomes.append({"question_id": first["question_id"], "category": first["category"], "turn": first["turn"],
                                 "outcome": outcome, "error": bool(first["error"] or second["error"]),
                                 "inconsistent": inconsistent})
            write_jsonl_atomic(output_dir / "pair_outcomes.jsonl", outcomes)
            metrics = pair_scores(outcomes)
            chart_series = {"adjusted win rate": {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("category/")}}
            chart_title, ylim = f"MT-Bench pairwise vs baseline ({self.judge.model})", (0, 1)
        metrics.update({f"judge_{k}": v for k, v in vars(stats).items()})
        # a score over the judgments that happened to come back is not the benchmark's score
        n_items = len(rows) if self.mode == "single" else len(outcomes)
        n_valid = metrics["n_ratings"] if self.mode == "single" else metrics["wins"] + metrics["losses"] + metrics["ties"]
        extra, reason = coverage_reason(self.name, self.judge.model, responses, n_items, n_valid, self.min_coverage,
                                        str(output_dir / "judgments.jsonl"))
        metrics.update(extra)
        try:
            from evals.charts import bar_chart

            bar_chart(chart_series, output_dir / "categories.png", chart_title, "mean" if self.mode == "single" else "rate", ylim)
        except ImportError:  # matplotlib missing: the numbers are what matter
            pass
        write_json_atomic(output_dir / "metrics.json", {"metrics": metrics, "judge": self.judge.model,
                                                        "prompt_version": prompt_version, "mode": self.mode})
        if reason is not None:
            raise TaskFailed(reason, metrics)
        return metrics

