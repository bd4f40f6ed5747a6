"""Judged results that cannot be junk: only valid verdicts are cached, every item needs one (or an explicit
minimum coverage, reported), and every field read from a reply is checked (issue 18 points 1, 2, 5)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.evals_support.fake_openai import FakeOpenAIServer

from evals import run_suite
from evals.base import EvalError
from evals.judge import JudgeCache, JudgeClient, JudgeRequest
from evals.judge.reply import MalformedReply, parse_reply
from evals.mt_bench import MTBench
from tests.test_evals_mt_bench import tiny  # noqa: F401 - the tiny chat model fixture

MT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mt_bench"


@pytest.fixture(autouse=True)
def judge_key(monkeypatch):
    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test-verdicts-0000")


def _judge(url: str) -> JudgeClient:
    return JudgeClient(model="judge-x", base_url=url, api_key_env="FAKE_JUDGE_KEY", timeout=5, max_retries=1,
                       backoff_base=0.01, backoff_max=0.02)


def _mt(**kw) -> MTBench:  # the first two questions are writing ones: 4 single-grading requests, no reference needed
    return MTBench(question_file=str(MT / "question.jsonl"), judge=None, limit=2, max_new_tokens=3, **kw)


def _run(tiny, out: Path, responder, task: MTBench | None = None) -> tuple[dict, int]:
    task = task or _mt()
    with FakeOpenAIServer(responder=responder) as server:
        task.judge = _judge(server.base_url)
        results = run_suite(*tiny, [task], out)
        return results, server.count()


JUNK = ["I refuse to rate this.", None, "", "Rating: 7/10", "[[999]]", "[[0]]", "[[10.5]]", "Rating: [[11]]"]


@pytest.mark.parametrize("junk", JUNK, ids=repr)
def test_junk_verdict_is_not_cached_fails_the_task_and_a_fixed_judge_reruns_only_it(tiny, tmp_path, junk):
    out = tmp_path / "eval"
    bad = lambda body: {"content": junk if "### User" in body["messages"][-1]["content"] else "Rating: [[6]]"}  # noqa: E731
    first, sent = _run(tiny, out, bad)
    assert sent == 4 and not first["complete"] and "mt_bench/score" not in first["metrics"]
    reason = first["failed"]["mt_bench"]["reason"]
    assert "2 of 4 replies are not valid verdicts" in reason and "rerun the same command" in reason and "\n" not in reason
    assert first["failed"]["mt_bench"]["metrics"]["coverage"] == 0.5
    assert len(JudgeCache(out / "mt_bench" / "judge_cache.jsonl")) == 2  # the valid ones only
    fixed, sent = _run(tiny, out, lambda body: {"content": "Rating: [[6]]"})
    assert sent == 2 and fixed["complete"]  # only the junk is asked again
    assert fixed["metrics"]["mt_bench/score"] == 6.0 and fixed["metrics"]["mt_bench/coverage"] == 1.0
    again, sent = _run(tiny, out, lambda body: {"content": "Rating: [[1]]"})
    assert sent == 0 and again["metrics"]["mt_bench/score"] == 6.0


def test_out_of_range_rating_is_never_a_score(tiny, tmp_path):
    results, _ = _run(tiny, tmp_path / "eval", lambda body: {"content": "[[999]]"})
    assert not results["complete"] and "mt_bench/score" not in results["metrics"]
    assert "rating 999 outside the scale [1, 10]" in results["failed"]["mt_bench"]["reason"]
    rows = [json.loads(x) for x in (tmp_path / "eval" / "mt_bench" / "judgments.jsonl").read_text().splitlines()]
    assert all(r["rating"] is None and "outside" in r["invalid"] for r in rows)


def test_explicit_min_coverage_accepts_partial_judging_and_reports_it(tiny, tmp_path):
    half = lambda body: {"content": "Rating: [[8]]" if "### User" in body["messages"][-1]["content"] else "no idea"}  # noqa: E731
    results, _ = _run(tiny, tmp_path / "eval", half, _mt(min_coverage=0.5))
    m = results["metrics"]
    assert results["complete"] and m["mt_bench/score"] == 8.0
    assert (m["mt_bench/coverage"], m["mt_bench/min_coverage"], m["mt_bench/n_ratings"]) == (0.5, 0.5, 2)
    on_disk = json.loads((tmp_path / "eval" / "results.json").read_text())["metrics"]
    assert on_disk["mt_bench/coverage"] == 0.5
    results, _ = _run(tiny, tmp_path / "eval2", half, _mt(min_coverage=0.75))
    assert not results["complete"] and "coverage 0.500 < min_coverage 0.75" in results["failed"]["mt_bench"]["reason"]


@pytest.mark.parametrize("value", [0, -0.1, 1.5, "all", True, None])
def test_bad_min_coverage_is_refused(value):
    with pytest.raises(EvalError, match="min_coverage must be a fraction in \\(0, 1\\]"):
        _mt(min_coverage=value)


def _completion(**over) -> dict:
    base = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Rating: [[5]]"},
                         "logprobs": {"content": [{"token": "m", "logprob": -0.1,
                                                   "top_logprobs": [{"token": "m", "logprob": -0.1},
                                                                    {"token": "M", "logprob": -2.3}]}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3}}
    for path, value in over.items():
        *parents, leaf = path.split(".")
        node = base
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is _DELETE:
            del node[leaf]
        else:
            node[int(leaf) if leaf.isdigit() else leaf] = value
    return base


_DELETE = object()
LP = "choices.0.logprobs.content.0"
BAD_FIELDS = {
    "usage.prompt_tokens": "many", "usage.completion_tokens": -1, "usage": [3],
    "choices": [], "choices.0": "text", "choices.0.message": _DELETE, "choices.0.message.content": 7,
    "choices.0.logprobs": "yes", f"{LP}.top_logprobs": {"m": -1}, f"{LP}.top_logprobs.0.token": 5,
    f"{LP}.top_logprobs.0.logprob": "-0.1", f"{LP}.top_logprobs.1.logprob": math.nan, f"{LP}.top_logprobs.1": None,
    f"{LP}.top_logprobs.0.logprob": 0.5, "choices.0.logprobs.content": "m",
}


def test_a_good_reply_is_read():
    reply = parse_reply(_completion())
    assert reply.content == "Rating: [[5]]" and reply.usage == {"prompt_tokens": 10, "completion_tokens": 3}
    assert reply.top_logprobs == [{"token": "m", "logprob": -0.1}, {"token": "M", "logprob": -2.3}]
    assert parse_reply(_completion(**{"choices.0.message.content": None, "usage": None})).content is None


@pytest.mark.parametrize("field", list(BAD_FIELDS), ids=str)
def test_every_field_read_is_checked(field):
    with pytest.raises(MalformedReply, match=r"^field "):
        parse_reply(_completion(**{field: BAD_FIELDS[field]}))


@pytest.mark.parametrize("field", ["usage.prompt_tokens", "choices.0.message.content", f"{LP}.top_logprobs.0.logprob"])
def test_bad_field_over_http_is_a_malformed_reply_never_cached(tmp_path, field):
    payload = _completion(**{field: BAD_FIELDS[field]})
    with FakeOpenAIServer(fault=lambda body, n: ("raw", payload)) as server:
        responses, stats = _judge(server.base_url).judge([JudgeRequest.chat(None, "q", logprobs=True, top_logprobs=5)],
                                                         tmp_path / "cache.jsonl")
    assert responses[0].error.startswith("malformed reply: field ") and "\n" not in responses[0].error
    assert stats.failures == 1 and stats.sent == 2  # retried once (max_retries 1), then recorded as failed
    assert len(JudgeCache(tmp_path / "cache.jsonl")) == 0


def test_malformed_prompt_tokens_ends_the_task_not_the_process(tiny, tmp_path):
    payload = _completion(**{"usage.prompt_tokens": "many"})
    task = _mt()
    with FakeOpenAIServer(fault=lambda body, n: ("raw", payload)) as server:
        task.judge = _judge(server.base_url)
        results = run_suite(*tiny, [task], tmp_path / "eval")
    assert not results["complete"] and "malformed reply: field usage.prompt_tokens" in results["failed"]["mt_bench"]["reason"]
