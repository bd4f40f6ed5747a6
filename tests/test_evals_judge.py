"""Judge client over real HTTP against a local OpenAI-compatible server with injected faults."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.evals_support.fake_openai import FakeOpenAIServer

from evals.judge import JudgeCache, JudgeClient, JudgeRequest  # noqa: E402

KEY = "sk-test-SECRET-do-not-write-1234"


@pytest.fixture(autouse=True)
def judge_key(monkeypatch):
    monkeypatch.setenv("FAKE_JUDGE_KEY", KEY)


def _client(url: str, **kw) -> JudgeClient:
    kw = {"max_concurrency": 4, "timeout": 0.5, "max_retries": 4, "backoff_base": 0.01, "backoff_max": 0.05, **kw}
    return JudgeClient(model="judge", base_url=url, api_key_env="FAKE_JUDGE_KEY", **kw)


def _requests(n: int) -> list[JudgeRequest]:
    return [JudgeRequest.chat("system", f"question {i}", max_tokens=16) for i in range(n)]


def _faults(body, n):
    text = body["messages"][-1]["content"]
    i = int(text.split()[-1])
    plan = {0: ("status", 429), 1: ("status", 500), 2: ("delay", 1.5), 3: ("drop",), 4: ("status", 503)}
    if i == 5:
        return ("content", "I refuse to give a rating")  # malformed verdict: passed through, parsed later
    return plan.get(i) if n == 0 else None


def test_faults_are_retried_and_everything_completes(tmp_path):
    with FakeOpenAIServer(fault=_faults) as server:
        responses, stats = _client(server.base_url).judge(_requests(12), tmp_path / "cache.jsonl")
    assert all(r.error is None for r in responses)
    assert responses[5].content == "I refuse to give a rating"
    assert all("[[" in r.content for i, r in enumerate(responses) if i != 5)
    # 12 requests, 5 of them failed once (429, 500, timeout, dropped connection, 503)
    assert stats.sent == 17 and stats.retries == 5 and stats.failures == 0 and stats.cache_hits == 0
    assert stats.prompt_tokens > 0 and stats.completion_tokens > 0
    assert len(JudgeCache(tmp_path / "cache.jsonl")) == 12
    assert server.authorization == {f"Bearer {KEY}"}


def test_rerun_hits_cache_and_sends_nothing(tmp_path):
    with FakeOpenAIServer() as server:
        first, _ = _client(server.base_url).judge(_requests(6), tmp_path / "cache.jsonl")
        n_after_first = server.count()
        second, stats = _client(server.base_url).judge(_requests(6), tmp_path / "cache.jsonl")
        assert server.count() == n_after_first == 6
    assert stats.sent == 0 and stats.cache_hits == 6
    assert [r.content for r in first] == [r.content for r in second] and all(r.cached for r in second)


def test_permanent_failure_is_recorded_not_cached_and_retried_on_rerun(tmp_path):
    always_500 = lambda body, n: ("status", 500) if body["messages"][-1]["content"].endswith(" 1") else None  # noqa: E731
    with FakeOpenAIServer(fault=always_500) as server:
        responses, stats = _client(server.base_url, max_retries=2).judge(_requests(3), tmp_path / "c.jsonl")
        assert responses[1].content is None and "500" in responses[1].error
        assert stats.failures == 1 and stats.sent == 3 + 2
    with FakeOpenAIServer() as server:
        responses, stats = _client(server.base_url).judge(_requests(3), tmp_path / "c.jsonl")
        assert server.count() == 1 and responses[1].error is None and stats.cache_hits == 2


def test_client_error_is_not_retried(tmp_path):
    with FakeOpenAIServer(fault=lambda body, n: ("status", 400)) as server:
        responses, stats = _client(server.base_url).judge(_requests(1), tmp_path / "c.jsonl")
    assert server.count() == 1 and stats.failures == 1 and "400" in responses[0].error


def test_missing_key_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKE_JUDGE_KEY")
    with pytest.raises(RuntimeError, match="FAKE_JUDGE_KEY"):
        _client("http://127.0.0.1:9/v1").judge(_requests(1), tmp_path / "c.jsonl")


def test_identical_requests_are_sent_once(tmp_path):
    with FakeOpenAIServer() as server:
        responses, stats = _client(server.base_url).judge(_requests(1) * 3, tmp_path / "c.jsonl")
    assert server.count() == 1 and len({r.content for r in responses}) == 1


def test_torn_cache_line_is_ignored(tmp_path):
    cache = JudgeCache(tmp_path / "c.jsonl")
    cache.put("a", {"content": "x", "top_logprobs": None, "usage": {}})
    with open(tmp_path / "c.jsonl", "a") as f:
        f.write('{"key": "b", "respo')
    assert len(JudgeCache(tmp_path / "c.jsonl")) == 1


def test_rerun_after_kill_sends_no_answered_request_again(tmp_path):
    n, answer_first = 20, 8
    answered: set[str] = set()
    lock = threading.Lock()

    def first_k_then_hang(body, seen):
        with lock:
            if len(answered) < answer_first:
                answered.add(body["messages"][-1]["content"])
                return None
        return ("hang",)

    cache = tmp_path / "cache.jsonl"
    child = [sys.executable, str(Path(__file__).parent / "evals_support" / "judge_child.py")]
    env = {**os.environ, "FAKE_JUDGE_KEY": KEY}
    with FakeOpenAIServer(fault=first_k_then_hang) as server:
        proc = subprocess.Popen(child + [server.base_url, str(cache), str(n)], env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if cache.exists() and len(cache.read_text().splitlines()) >= answer_first:
                    break
                assert proc.poll() is None, "child exited early"
                time.sleep(0.05)
            time.sleep(0.2)  # requests now hang in flight: the kill below interrupts them
        finally:
            proc.kill()
            proc.wait()
        first_run = {r["body"]["messages"][-1]["content"] for r in server.log}
    assert len(JudgeCache(cache)) == answer_first and answered < first_run
    with FakeOpenAIServer() as server:
        out = subprocess.run(child + [server.base_url, str(cache), str(n)], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        resent = {r["body"]["messages"][-1]["content"] for r in server.log}
    assert server.count() == n - answer_first
    assert not resent & answered
    assert len(JudgeCache(cache)) == n
    assert KEY not in cache.read_text()
