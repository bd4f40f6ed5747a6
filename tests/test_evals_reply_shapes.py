"""Replies that are JSON objects but not completions say what they are: an error body, a streaming chunk."""

from __future__ import annotations

import pytest

from tests.evals_support.fake_openai import FakeOpenAIServer
from tests.test_evals_verdicts import _judge

from evals.judge import JudgeCache, JudgeRequest
from evals.judge.reply import MalformedReply, parse_reply

NOT_A_COMPLETION = [  # (a 200 body, what the one-line reason must say)
    ({"error": {"message": "model overloaded", "type": "server_error"}}, "answered 200 with an error.*model overloaded"),
    ({"error": "rate limited"}, "answered 200 with an error.*rate limited"),
    ({"error": {"code": 503}, "choices": None}, "answered 200 with an error.*503"),
    ({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Rating: [[5]]"}}]},
     "choices\\[0\\].delta: a streaming chunk"),
    ({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "a streaming chunk"),
]


@pytest.mark.parametrize("body, reason", NOT_A_COMPLETION)
def test_a_body_that_is_not_a_completion_says_what_it_is(body, reason):
    with pytest.raises(MalformedReply, match=reason):
        parse_reply(body)


def test_an_error_body_over_http_is_a_malformed_reply_naming_the_server_message(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_JUDGE_KEY", "x")
    body = {"error": {"message": "model overloaded", "type": "server_error"}}
    with FakeOpenAIServer(fault=lambda request, n: ("raw", body)) as server:
        responses, stats = _judge(server.base_url).judge([JudgeRequest.chat(None, "q")], tmp_path / "cache.jsonl")
    assert "model overloaded" in responses[0].error and "\n" not in responses[0].error
    assert responses[0].error.startswith("malformed reply: field error:")
    assert len(JudgeCache(tmp_path / "cache.jsonl")) == 0
