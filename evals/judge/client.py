"""Judge backend: the ``openai`` client against any OpenAI-compatible endpoint.

Works with OpenAI, vLLM (``vllm serve``), SGLang, llama.cpp server, Ollama ... Requests run
concurrently (bounded by a semaphore) with a per-request timeout; 429, 5xx, timeouts and dropped
connections are retried with exponential backoff and full jitter ("Exponential Backoff And Jitter",
AWS Architecture Blog, 2015), honouring ``Retry-After``. Every reply is read field by field
(``evals.judge.reply``) and, when the caller's ``validate`` accepts it as a verdict, stored in a
``JudgeCache`` before it is returned, so reruns and restarts send no answered request twice; junk
replies are not stored, so the next run asks again.

The API key is read from the environment variable *named* by ``api_key_env`` at request time; it is
never stored on the object, in caches, results or logs. A key written in ``api_key`` or typed into
``api_key_env`` is refused without being echoed, and credentials inside ``base_url``
(``http://user:KEY@host``, ``?api_key=KEY``) are sent to the endpoint but masked in ``describe()`` and
in error messages (``lit_align.redaction``). The run's own credentials (the key's value, the URL's
userinfo and query values) are masked in every reply before it is cached or returned, so an endpoint
that echoes the Authorization header cannot put them into judge_cache.jsonl, judgments.jsonl or results.json.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Coroutine, TypeVar

from evals.base import EvalError
from evals.judge.cache import JudgeCache, request_key
from evals.judge.reply import MalformedReply, parse_reply
from lit_align.redaction import credentials, is_env_var_name, mask_values, redact_text

T = TypeVar("T")
Validator = Callable[["JudgeResponse"], "str | None"]


class JudgeKeyMissing(EvalError, RuntimeError):
    """The environment variable named by ``api_key_env`` is not set."""


@dataclass(frozen=True)
class JudgeRequest:
    """One chat completion to ask the judge for."""

    messages: tuple[tuple[str, str], ...]
    """(role, content) pairs."""
    temperature: float = 0.0
    max_tokens: int = 2048
    logprobs: bool = False
    top_logprobs: int | None = None

    @classmethod
    def chat(cls, system: str | None, user: str, **kwargs: Any) -> "JudgeRequest":
        messages = ((("system", system),) if system else ()) + (("user", user),)
        return cls(messages=messages, **kwargs)

    def body(self, model: str) -> dict[str, Any]:
        """The request body sent to ``/chat/completions`` (also the cache key's content)."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": r, "content": c} for r, c in self.messages],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        return body


@dataclass
class JudgeResponse:
    """The judge's reply (or the reason there is none)."""

    content: str | None
    top_logprobs: list[dict[str, Any]] | None = None
    """First generated token's alternatives: [{"token", "logprob"}], when asked for and returned."""
    usage: dict[str, int] = field(default_factory=dict)
    cached: bool = False
    error: str | None = None
    """Set when every attempt failed; such requests are not cached and are retried on a rerun."""
    invalid: str | None = None
    """Set when the reply is not a valid verdict (the task's ``validate`` said why); not cached, re-asked on a rerun."""


@dataclass
class JudgeStats:
    """What a judging run cost: recorded in results.json."""

    requests: int = 0
    cache_hits: int = 0
    sent: int = 0
    retries: int = 0
    failures: int = 0
    invalid: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: "JudgeStats") -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` that also works when called from inside a running loop (e.g. Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class JudgeClient:
    """An OpenAI-compatible judge endpoint with bounded concurrency, retries and a cache."""

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        api_key: str | None = None,
    ) -> None:
        """
        Args:
            model: Judge model name as the endpoint knows it (e.g. gpt-4-0613, gpt-4-1106-preview).
            base_url: OpenAI-compatible base URL, e.g. http://localhost:8000/v1 for ``vllm serve``.
            api_key_env: NAME of the environment variable holding the key (the key itself is never stored).
            max_concurrency: Requests in flight at once.
            timeout: Seconds per request attempt before it is abandoned and retried.
            max_retries: Retries after the first attempt on 429, 5xx, timeouts and dropped connections.
            backoff_base: First backoff ceiling in seconds; doubles per retry (full jitter below the ceiling).
            backoff_max: Largest backoff ceiling in seconds.
            api_key: Not accepted: present only so that a key written into a config is refused (without being
                echoed); use api_key_env.
        """
        if api_key is not None:  # accepted as a parameter only to refuse it clearly (and without echoing it)
            raise ValueError("JudgeClient: api_key is not accepted (config files get saved and shared); put the key in an "
                             "environment variable and give the variable's NAME as api_key_env, e.g. api_key_env: OPENAI_API_KEY")
        if not is_env_var_name(api_key_env):
            raise ValueError("JudgeClient: api_key_env must be the NAME of an environment variable holding the key (like "
                             "OPENAI_API_KEY); the value given is not a variable name or looks like a key itself, so it is not shown")
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max

    def describe(self) -> dict[str, Any]:
        """Settings for results.json: credentials inside ``base_url`` are masked."""
        return {k: redact_text(v) if isinstance(v, str) else v for k, v in vars(self).items() if not k.startswith("_")}

    def _masked(self, reply: T) -> T:
        """``reply`` (a JudgeResponse or a message) with this run's credentials and any URL secrets masked."""
        secrets = credentials([self.api_key_env], [self.base_url])
        if isinstance(reply, JudgeResponse):
            reply.content, reply.top_logprobs, reply.error = mask_values([reply.content, reply.top_logprobs, reply.error], secrets)
            return reply
        return mask_values(reply, secrets)

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise JudgeKeyMissing(f"judge API key: environment variable {self.api_key_env!r} (judge.api_key_env) is not set or empty")
        return key

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)], at least ``Retry-After``."""
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        delay = random.uniform(0.0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def judge(self, requests: list[JudgeRequest], cache_path: str | os.PathLike,
              validate: Validator | None = None) -> tuple[list[JudgeResponse], JudgeStats]:
        """Answers for ``requests`` (same order) and what they cost; valid answers are cached at ``cache_path``.

        ``validate(response)`` returns None for a reply that is a usable verdict, else the reason it is not
        (unparseable, out of range). Only valid replies are cached: a junk reply (``I refuse to rate this``,
        null content) is returned with ``invalid`` set and asked again on the next run, so fixing the judge
        and rerunning the same command is enough. A cached entry that does not pass ``validate`` (written by
        an older version, or under a stricter check now) is asked again too.
        """
        cache = JudgeCache(Path(cache_path))
        return run_coroutine(self._judge_all(requests, cache, validate or (lambda response: None)))

    async def _judge_all(self, requests: list[JudgeRequest], cache: JudgeCache,
                         validate: Validator) -> tuple[list[JudgeResponse], JudgeStats]:
        stats = JudgeStats(requests=len(requests))
        bodies = [r.body(self.model) for r in requests]
        keys = [request_key(b) for b in bodies]
        out: dict[str, JudgeResponse] = {}
        todo: dict[str, dict[str, Any]] = {}
        for key, body in zip(keys, bodies):
            if key in out or key in todo:  # identical requests in one batch are sent once
                continue
            if key in cache:
                hit = JudgeResponse(**cache.get(key), cached=True)
                if validate(hit) is None:
                    out[key] = hit
                    continue
            todo[key] = body
        stats.cache_hits = sum(1 for k in keys if k in out)
        if todo:
            from openai import AsyncOpenAI

            client = AsyncOpenAI(base_url=self.base_url, api_key=self._api_key(), max_retries=0, timeout=self.timeout)
            semaphore = asyncio.Semaphore(self.max_concurrency)
            try:
                answers = await asyncio.gather(*(self._one(client, semaphore, b, k, cache, stats, validate)
                                                 for k, b in todo.items()))
            finally:
                await client.close()
            out.update(zip(todo, answers))
        return [out[k] for k in keys], stats

    async def _one(self, client, semaphore: asyncio.Semaphore, body: dict[str, Any], key: str, cache: JudgeCache,
                   stats: JudgeStats, validate: Validator) -> JudgeResponse:
        import openai

        error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            async with semaphore:  # released while backing off, so others can use the slot
                try:
                    stats.sent += 1
                    # the raw JSON, checked field by field here (the SDK's models do not validate types)
                    raw = await client.chat.completions.with_raw_response.create(**body, timeout=self.timeout)
                    answer = self._masked(_response(raw.http_response.json(), stats))  # before it reaches any file
                    answer.invalid = validate(answer)
                    if answer.invalid is None:
                        # stored (fsynced) as soon as it arrives: a kill loses only requests in flight
                        cache.put(key, {"content": answer.content, "top_logprobs": answer.top_logprobs, "usage": answer.usage})
                    else:
                        stats.invalid += 1  # not cached: the next run asks again
                    return answer
                except (openai.APITimeoutError, openai.APIConnectionError) as err:
                    error = self._masked(f"{type(err).__name__}: {err}")  # may quote the URL
                except openai.APIStatusError as err:
                    error = f"HTTP {err.status_code}: {type(err).__name__}"
                    if err.status_code != 429 and err.status_code < 500:
                        break  # 400/401/404 ... will not get better by asking again
                    retry_after = _retry_after(err)
                except MalformedReply as err:
                    error = self._masked(f"malformed reply: {err}")
                except (openai.APIResponseValidationError, ValueError) as err:  # not JSON at all (an HTML page ...)
                    error = self._masked(f"malformed reply: {type(err).__name__}: {str(err)[:200]}")
            if attempt < self.max_retries:
                stats.retries += 1
                await asyncio.sleep(self.backoff(attempt, retry_after))
        stats.failures += 1
        return JudgeResponse(content=None, error=error)


def _retry_after(err: Any) -> float | None:
    try:
        return float(err.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


def _response(data: Any, stats: JudgeStats) -> JudgeResponse:
    reply = parse_reply(data)
    stats.prompt_tokens += reply.usage.get("prompt_tokens", 0)
    stats.completion_tokens += reply.usage.get("completion_tokens", 0)
    return JudgeResponse(content=reply.content, top_logprobs=reply.top_logprobs, usage=reply.usage)
