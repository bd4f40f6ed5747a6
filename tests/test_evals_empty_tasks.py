"""A judged task with nothing to judge is failed, not complete: no items is no score (coverage 0, not 1)."""

from __future__ import annotations

import pytest

from tests.evals_support.fake_openai import FakeOpenAIServer
from tests.test_evals_alpaca import AE, _setup
from tests.test_evals_verdicts import MT, _judge, judge_key, tiny  # noqa: F401 (fixtures)

from evals import run_suite
from evals.alpaca_eval import AlpacaEval
from evals.mt_bench import MTBench


def _mt_empty(tmp_path, how):
    if how == "limit 0":
        return MTBench(question_file=str(MT / "question.jsonl"), judge=None, limit=0, max_new_tokens=3)
    empty = tmp_path / "questions.jsonl"
    empty.write_text("")
    return MTBench(question_file=str(empty), judge=None, max_new_tokens=3)


def _alpaca_empty(tmp_path, how):
    ins, base = _setup(tmp_path, 2)
    if how != "limit 0":
        ins.write_text("")
        base.write_text("[]")
    return AlpacaEval(instructions_file=str(ins), baseline_outputs_file=str(base), judge=None, max_new_tokens=3,
                      judge_prompt_file=str(AE / "alpaca_eval_clf_prompt.txt"), limit=0 if how == "limit 0" else None)


@pytest.mark.parametrize("how", ["limit 0", "empty file"])
@pytest.mark.parametrize("make", [_mt_empty, _alpaca_empty], ids=["mt_bench", "alpaca_eval"])
def test_nothing_to_judge_is_a_failed_task(tiny, tmp_path, make, how):  # noqa: F811
    task = make(tmp_path, how)
    with FakeOpenAIServer(responder=lambda body: {"content": "Rating: [[7]]"}) as server:
        task.judge = _judge(server.base_url)
        results = run_suite(*tiny, [task], tmp_path / "eval")
    assert not results["complete"], results["metrics"]
    assert task.name in results["failed"] and "no items to judge" in results["failed"][task.name]["reason"]
    assert results["metrics"].get(f"{task.name}/coverage", 0.0) == 0.0


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_a_verifier_without_prompts_is_a_failed_task(tiny, tmp_path, content):  # noqa: F811
    from evals.verifier import VerifierTask

    data = tmp_path / "empty.jsonl"
    data.write_text(content)
    results = run_suite(*tiny, [VerifierTask(data_path=str(data), max_new_tokens=3)], tmp_path / "eval")
    assert not results["complete"] and "verifier/accuracy" not in results["metrics"]
    assert "holds no prompts" in results["failed"]["verifier"]["reason"]
