"""MT-Bench judging: building the judge requests and turning verdicts into scores.

Follows FastChat llm_judge (Zheng et al. 2023): single-answer grading of each turn (turn 2 with the
whole conversation, graded on the second answer), reference-guided prompts for math, reasoning and
coding; pairwise grading twice with the order swapped, disagreement counted as a tie.
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from evals.judge.client import JudgeRequest
from evals.judge.mt_bench_prompts import JudgePrompt
from evals.mt_bench_data import NEED_REF_CATEGORIES


def _prompt_name(kind: str, category: str, turn: int) -> tuple[str, bool]:
    ref = category in NEED_REF_CATEGORIES
    base = {"single": "single-math-v1" if ref else "single-v1", "pair": "pair-math-v1" if ref else "pair-v2"}[kind]
    return base + ("-multi-turn" if turn == 2 else ""), ref


def _reference(question: dict[str, Any], references: dict[Any, list[str]]) -> list[str]:
    qid = question["question_id"]
    if qid in references:
        return references[qid]
    if isinstance(question.get("reference"), list):  # some question files carry it inline
        return question["reference"]
    raise ValueError(f"question {qid!r} ({question['category']}) needs a reference answer: none in the reference file")


def single_requests(questions: list[dict[str, Any]], answers: dict[Any, list[str]], references: dict[Any, list[str]],
                    prompts: dict[str, JudgePrompt], max_tokens: int) -> list[dict[str, Any]]:
    """One judge request per (question, turn) with its metadata."""
    out = []
    for q in questions:
        ans = answers[q["question_id"]]
        for turn in range(1, min(len(q["turns"]), 2) + 1):
            name, needs_ref = _prompt_name("single", q["category"], turn)
            ref = _reference(q, references) if needs_ref else ["", ""]
            fields = {"question": q["turns"][0], "answer": ans[0], "ref_answer_1": ref[0]}
            if turn == 2:
                fields = {"question_1": q["turns"][0], "question_2": q["turns"][1], "answer_1": ans[0],
                          "answer_2": ans[1], "ref_answer_1": ref[0], "ref_answer_2": ref[1] if len(ref) > 1 else ""}
            prompt = prompts[name]
            request = JudgeRequest.chat(prompt.system_prompt, prompt.prompt_template.format(**fields),
                                        temperature=0.0, max_tokens=max_tokens)
            out.append({"question_id": q["question_id"], "category": q["category"], "turn": turn, "prompt": name,
                        "request": request})
    return out


def pair_requests(questions: list[dict[str, Any]], answers: dict[Any, list[str]], baseline: dict[Any, list[str]],
                  references: dict[Any, list[str]], prompts: dict[str, JudgePrompt], max_tokens: int) -> list[dict[str, Any]]:
    """Two judge requests per (question, turn): model as A then baseline as A (order swap)."""
    out = []
    for q in questions:
        qid = q["question_id"]
        if qid not in baseline:
            raise ValueError(f"baseline answers lack question_id {qid!r}")
        for turn in range(1, min(len(q["turns"]), 2) + 1):
            name, needs_ref = _prompt_name("pair", q["category"], turn)
            ref = _reference(q, references) if needs_ref else ["", ""]
            for swapped in (False, True):
                a, b = (baseline[qid], answers[qid]) if swapped else (answers[qid], baseline[qid])
                fields = {"question": q["turns"][0], "answer_a": a[0], "answer_b": b[0], "ref_answer_1": ref[0]}
                if turn == 2:
                    fields = {"question_1": q["turns"][0], "question_2": q["turns"][1], "answer_a_1": a[0],
                              "answer_a_2": a[1], "answer_b_1": b[0], "answer_b_2": b[1], "ref_answer_1": ref[0],
                              "ref_answer_2": ref[1] if len(ref) > 1 else ""}
                prompt = prompts[name]
                request = JudgeRequest.chat(prompt.system_prompt, prompt.prompt_template.format(**fields),
                                            temperature=0.0, max_tokens=max_tokens)
                out.append({"question_id": qid, "category": q["category"], "turn": turn, "prompt": name,
                            "swapped": swapped, "request": request})
    return out


def single_scores(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ratings per turn, per category and overall over valid ratings; failures counted apart."""
    valid = [r for r in rows if r["rating"] is not None]
    metrics: dict[str, Any] = {
        "score": mean(r["rating"] for r in valid) if valid else float("nan"),
        "n_ratings": len(valid),
        "parse_failures": sum(1 for r in rows if r["rating"] is None and r["error"] is None),
        "judge_failures": sum(1 for r in rows if r["error"] is not None),
    }
    for turn in (1, 2):
        turn_rows = [r["rating"] for r in valid if r["turn"] == turn]
        if turn_rows:
            metrics[f"score_turn{turn}"] = mean(turn_rows)
    for category in dict.fromkeys(r["category"] for r in rows):
        cat = [r["rating"] for r in valid if r["category"] == category]
        metrics[f"category/{category}"] = mean(cat) if cat else float("nan")
    return metrics


def pair_outcome(first: str | None, second: str | None) -> tuple[str | None, bool]:
    """Model's outcome from the two orders: first has the model as A, second has it as B.

    ``win``/``loss``/``tie``; the orders disagreeing is a tie (FastChat "inconsistent"); None when
    either verdict is unparseable (counted as a failure, excluded). The flag says the orders disagreed.
    """
    if first is None or second is None:
        return None, False
    g1 = {"A": "win", "B": "loss", "tie": "tie"}[first]
    g2 = {"A": "loss", "B": "win", "tie": "tie"}[second]
    return (g1, False) if g1 == g2 else ("tie", True)


def pair_scores(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Adjusted win rate (W + 0.5 T) / (W + L + T) overall, per turn and per category."""

    def rate(items: list[str]) -> float:
        w, l, t = (items.count(k) for k in ("win", "loss", "tie"))
        return (w + 0.5 * t) / (w + l + t) if items else float("nan")

    valid = [o for o in outcomes if o["outcome"] is not None]
    allv = [o["outcome"] for o in valid]
    metrics: dict[str, Any] = {
        "win_rate_adjusted": rate(allv),
        "wins": allv.count("win"), "losses": allv.count("loss"), "ties": allv.count("tie"),
        "inconsistent": sum(1 for o in valid if o["inconsistent"]),
        "parse_failures": sum(1 for o in outcomes if o["outcome"] is None and not o["error"]),
        "judge_failures": sum(1 for o in outcomes if o["error"]),
    }
    for turn in (1, 2):
        metrics[f"win_rate_adjusted_turn{turn}"] = rate([o["outcome"] for o in valid if o["turn"] == turn])
    for category in dict.fromkeys(o["category"] for o in outcomes):
        metrics[f"category/{category}"] = rate([o["outcome"] for o in valid if o["category"] == category])
    return metrics
