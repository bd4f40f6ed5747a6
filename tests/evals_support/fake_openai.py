"""A local OpenAI-compatible ``/v1/chat/completions`` server for tests, with fault injection.

Bound to 127.0.0.1 on a free port, threaded, stops itself after ``lifetime`` seconds at the latest.
The real ``openai`` client talks to it over real HTTP. ``fault(body, n)`` (n = how many times this
exact request was seen before, 0 the first time) can return:

- ``("status", 429 | 500 | 503 ...)``: an error reply;
- ``("delay", seconds)``: answer late (past the client's timeout, the client gives up);
- ``("drop",)``: close the connection without a reply;
- ``("hang",)``: never answer (until the server stops);
- ``("content", text)``: answer with this text (e.g. a malformed verdict; None: null content);
- ``("raw", payload)``: answer 200 with exactly this JSON payload (a malformed completion);
- ``None``: answer normally with ``responder(body)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Fault = tuple | None


def body_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _hash_int(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def default_responder(body: dict[str, Any]) -> dict[str, Any]:
    """Deterministic plausible verdicts: MT-Bench rating, pairwise verdict, AlpacaEval identifier."""
    system = " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
    user = body["messages"][-1]["content"]
    h = _hash_int(user)
    if "model_identifier" in user:
        p_m = (h % 97 + 1) / 99.0
        top = [{"token": "m", "logprob": math.log(p_m)}, {"token": "M", "logprob": math.log(1 - p_m)}]
        return {"content": "m" if p_m >= 0.5 else "M", "top_logprobs": top if body.get("logprobs") else None}
    if '"[[A]]"' in system or "[[A]]" in user:
        return {"content": f"Both are fine. [[{'ABC'[h % 3]}]]"}
    return {"content": f"The answer is adequate. Rating: [[{1 + h % 10}]]"}


class FakeOpenAIServer:
    """Use as a context manager; ``base_url`` is set while it runs; ``log`` records every request."""

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], dict[str, Any]] = default_responder,
        fault: Callable[[dict[str, Any], int], Fault] | None = None,
        lifetime: float = 300.0,
    ) -> None:
        self.responder = responder
        self.fault = fault or (lambda body, n: None)
        self.lifetime = lifetime
        self.log: list[dict[str, Any]] = []
        self.seen: dict[str, int] = {}
        self.answered: list[str] = []
        self.authorization: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.base_url = ""

    def __enter__(self) -> "FakeOpenAIServer":
        server = self
        handler = type("Handler", (_Handler,), {"owner": server})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._timer.cancel()

    def count(self, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.log if status is None or r["status"] == status)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        owner = self.owner
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        key = body_key(body)
        with owner._lock:
            n = owner.seen.get(key, 0)
            owner.seen[key] = n + 1
            owner.authorization.add(self.headers.get("Authorization", ""))
        fault = owner.fault(body, n) if self.path.endswith("/chat/completions") else ("status", 404)
        entry = {"key": key, "body": body, "status": 200, "fault": fault}
        with owner._lock:
            owner.log.append(entry)
        if fault and fault[0] == "status":
            entry["status"] = fault[1]
            return self._send(fault[1], {"error": {"message": "injected", "type": "test", "code": fault[1]}})
        if fault and fault[0] == "drop":
            entry["status"] = "drop"
            self.close_connection = True
            self.connection.close()
            return
        if fault and fault[0] == "hang":
            entry["status"] = "hang"
            owner._stop.wait()
            return
        if fault and fault[0] == "delay":
            entry["status"] = "late"
            if owner._stop.wait(fault[1]):
                return
        if fault and fault[0] == "raw":
            with owner._lock:
                owner.answered.append(key)
            return self._send(200, fault[1])
        reply = {"content": fault[1]} if fault and fault[0] == "content" else owner.responder(body)
        completion = _completion(body, reply)
        with owner._lock:
            owner.answered.append(key)
        self._send(200, completion)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client already gave up (timeout): fine


def _completion(body: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    content = reply["content"]
    words = len((content or "").split())
    logprobs = None
    if reply.get("top_logprobs"):
        top = [{"token": t["token"], "logprob": t["logprob"], "bytes": None} for t in reply["top_logprobs"]]
        logprobs = {"content": [{**top[0], "top_logprobs": top}]}
    prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop", "logprobs": logprobs}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": words, "total_tokens": prompt_tokens + words},
    }
