"""A real OpenAI-compatible judge for tests: llama-cpp-python's server on SmolLM2-135M-Instruct, plus a
counting proxy in front of it (what reached the server, per request).

The server lives in its own environment (``.venv-llama``, made by ``bash .ci/install dev`` or
``bash .ci/install llama``): it pins its own numpy / pydantic / fastapi, which lit-align's environment
does not need. ``LIT_ALIGN_LLAMA_PYTHON`` names another interpreter that has ``llama_cpp.server``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LLAMA_ENV = REPO / ".venv-llama"


def llama_python() -> Path | None:
    """The interpreter with llama_cpp.server installed, or None."""
    given = os.environ.get("LIT_ALIGN_LLAMA_PYTHON")
    python = Path(given) if given else LLAMA_ENV / "bin" / "python"
    if not python.is_file():
        return None
    ok = subprocess.run([str(python), "-c", "import llama_cpp.server"], capture_output=True, timeout=120)
    return python if ok.returncode == 0 else None


def smollm2_gguf() -> Path:
    from lit_align.models import SmolLM2

    folder, name = SmolLM2().gguf_location()
    return folder / name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on a free loopback port; a context manager that stops it (its own process)."""

    def __init__(self, python: Path, model: Path, n_ctx: int = 8192, n_threads: int = 1, start_timeout: float = 300.0,
                 log_path: Path | None = None) -> None:
        self.python, self.model, self.n_ctx, self.n_threads = python, model, n_ctx, n_threads
        self.start_timeout = start_timeout
        self.log_path = log_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "LlamaServer":
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        cmd = [str(self.python), "-m", "llama_cpp.server", "--model", str(self.model), "--n_ctx", str(self.n_ctx),
               "--n_threads", str(self.n_threads), "--host", "127.0.0.1", "--port", str(self.port)]
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self._proc.returncode} (log: {self.log_path})")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"llama_cpp.server did not answer within {self.start_timeout} s (log: {self.log_path})")

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


class CountingProxy:
    """Forwards every request to ``upstream`` and records the chat-completion bodies that reached it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.base_url = ""

    def count(self) -> int:
        with self._lock:
            return len(self.bodies)

    def __enter__(self) -> "CountingProxy":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith("/chat/completions"):
                    with owner._lock:
                        owner.bodies.append(json.loads(data))
                request = urllib.request.Request(owner.upstream + self.path.removeprefix("/v1"), data=data, method="POST",
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=600) as reply:
                        status, payload = reply.status, reply.read()
                except urllib.error.HTTPError as err:
                    status, payload = err.code, err.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
