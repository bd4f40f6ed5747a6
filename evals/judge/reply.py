"""Reading a chat-completion reply's JSON field by field: every field the judge code uses is checked.

The ``openai`` SDK builds its response objects without validating types, so a reply with
``"prompt_tokens": "many"`` or ``"content": 7`` used to travel on and fail later as a TypeError. Here
each field read is checked where it is read; a bad one raises ``MalformedReply`` naming the field and
the value (shortened), which the client records as a malformed reply (retried, never cached).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class MalformedReply(ValueError):
    """A reply that is JSON but not a chat completion the judge code can use; the message names the field."""


@dataclass
class Reply:
    content: str | None
    top_logprobs: list[dict[str, Any]] | None = None
    usage: dict[str, int] = field(default_factory=dict)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(path: str, expected: str, value: Any) -> MalformedReply:
    return MalformedReply(f"field {path}: expected {expected}, got {_show(value)}")


def _get(obj: dict[str, Any], key: str, path: str, expected: type | tuple[type, ...], what: str,
         optional: bool = False) -> Any:
    name = f"{path}.{key}" if path else key
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise MalformedReply(f"field {name} is missing or null")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, expected):  # bool is an int to Python, never to us
        raise _bad(name, what, value)
    return value


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    if value is None:
        return 0  # servers may leave a count out; nothing to add then
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(f"usage.{key}", "a whole number >= 0", value)
    return value


def _top_logprobs(logprobs: dict[str, Any]) -> list[dict[str, Any]] | None:
    tokens = _get(logprobs, "content", "choices[0].logprobs", list, "a list", optional=True)
    if not tokens:
        return None
    first = tokens[0]
    if not isinstance(first, dict):
        raise _bad("choices[0].logprobs.content[0]", "an object", first)
    alternatives = _get(first, "top_logprobs", "choices[0].logprobs.content[0]", list, "a list", optional=True) or []
    out = []
    for i, entry in enumerate(alternatives):
        path = f"choices[0].logprobs.content[0].top_logprobs[{i}]"
        if not isinstance(entry, dict):
            raise _bad(path, "an object", entry)
        token = _get(entry, "token", path, str, "a string")
        logprob = _get(entry, "logprob", path, (int, float), "a number")
        if not (math.isfinite(logprob) or logprob == -math.inf) or logprob > 0:
            raise _bad(f"{path}.logprob", "a log-probability (<= 0)", logprob)
        out.append({"token": token, "logprob": float(logprob)})
    return out


def parse_reply(data: Any) -> Reply:
    """The content, the first token's top log-probs and the token counts of a ``/chat/completions`` reply."""
    if not isinstance(data, dict):
        raise _bad("(reply)", "a JSON object", data)
    if data.get("choices") is None and "error" in data:  # some proxies answer 200 with an error body
        error = data["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise MalformedReply(f"field error: the server answered 200 with an error instead of a completion: {_show(message)}")
    choices = _get(data, "choices", "", list, "a list")
    if not choices:
        raise MalformedReply("field choices: empty list (no completion)")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise _bad("choices[0]", "an object", choice)
    if "message" not in choice and "delta" in choice:  # text/event-stream chunks: the judge never asks for a stream
        raise MalformedReply("field choices[0].delta: a streaming chunk, not a completion (the judge sends stream=false; "
                             "is base_url an OpenAI-compatible /v1 endpoint?)")
    message = _get(choice, "message", "choices[0]", dict, "an object")
    content = _get(message, "content", "choices[0].message", str, "a string or null", optional=True)
    logprobs = _get(choice, "logprobs", "choices[0]", dict, "an object or null", optional=True)
    usage_obj = _get(data, "usage", "", dict, "an object or null", optional=True)
    usage = {}
    if usage_obj is not None:
        usage = {"prompt_tokens": _count(usage_obj, "prompt_tokens"), "completion_tokens": _count(usage_obj, "completion_tokens")}
    return Reply(content=content, top_logprobs=_top_logprobs(logprobs) if logprobs else None, usage=usage)
