"""The evaluation task interface and the suite runner that writes ``results.json``."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from lit_align.redaction import redact


class EvalTask:
    """Base class of an evaluation, chosen in YAML by ``class_path``.

    ``run`` receives the model already on its device and in eval mode, its tokenizer and a folder
    of its own for per-item files (answers, judgments), and returns flat, JSON-serialisable
    metrics. Tasks that cannot run (a hub-backed dataset offline) raise ``TaskSkipped``.
    """

    name: str = "task"

    def run(self, model, tokenizer, output_dir: Path) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement run")

    def describe(self) -> dict[str, Any]:
        """What to record about the task's settings in results.json."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and _jsonable(v)}


class TaskSkipped(Exception):
    """Raised by a task that cannot run here; the suite records the reason and goes on."""


class EvalError(ValueError):
    """A bad evaluation input, or an evaluation that produced no result; the message says which.

    ``cli.py`` reports these as one line (like ``lit_align.errors.UserError``).
    """


class TaskFailed(EvalError):
    """Raised by a task that ran but whose numbers are not a measurement (e.g. the judge never answered).

    The suite records ``reason`` and the partial ``metrics`` under ``failed`` in results.json (not
    under ``metrics``), leaves ``complete: false``, and goes on with the other tasks.
    """

    def __init__(self, reason: str, metrics: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.metrics = dict(metrics or {})


def undefined_metrics(metrics: dict[str, Any]) -> list[str]:
    """Names of metrics that are NaN / inf: no result (a mean over nothing), never to be reported as one."""
    return sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "lm_eval", "openai", "lit-align"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_json_atomic(path: Path, payload: Any, redacted: bool = False) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file.

    With ``redacted``, credentials inside strings (URLs with ``user:KEY@``, ``?api_key=``,
    provider-prefixed keys) are masked first (results.json: settings and errors, which get shared;
    per-item files keep model text exactly as generated).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    if redacted:
        payload = redact(json.loads(json.dumps(payload, default=str)), by_name=False)  # plain types: every string reached
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)


def read_jsonl(path: str | os.PathLike):
    """Yield ``(line number, row)`` of a jsonl file; blank lines skipped, bad JSON named by file:line."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({err.msg})") from None


def write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as jsonl via a temporary file and a rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` without its NaN / inf entries."""
    undefined = set(undefined_metrics(metrics))
    return {k: v for k, v in metrics.items() if k not in undefined}


def run_suite(
    model,
    tokenizer,
    tasks: list[EvalTask],
    output_dir: str | os.PathLike,
    extra_metrics: dict[str, Any] | None = None,
    run_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``tasks`` on ``model`` and write ``output_dir/results.json``; returns its content.

    Metrics are namespaced ``<task name>/<metric>``. ``extra_metrics`` (e.g. held-out preference
    metrics computed by the trainer) are merged in as they are. The file is written after each task
    with ``complete: false`` and rewritten with ``complete: true`` at the end, so a partial result is
    never mistaken for a complete one. A task that raises ``TaskFailed`` is recorded under ``failed``
    (reason and partial metrics) and ``complete`` stays false. A NaN / inf metric (a mean over no
    item) is not a result: it is left out of ``metrics`` and named under ``undefined``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "complete": False,
        "metrics": dict(extra_metrics or {}),
        "tasks": {},
        "skipped": {},
        "failed": {},
        "undefined": {},
        "run": run_info or {},
        "versions": package_versions(),
    }
    was_training = model.training
    model.eval()
    try:
        for task in tasks:
            started = time.perf_counter()
            try:
                metrics = task.run(model, tokenizer, output_dir / task.name)
            except TaskSkipped as reason:
                results["skipped"][task.name] = str(reason)
                write_json_atomic(output_dir / "results.json", results, redacted=True)
                continue
            except TaskFailed as failure:
                results["failed"][task.name] = {"reason": str(failure), "metrics": finite(failure.metrics)}
                write_json_atomic(output_dir / "results.json", results, redacted=True)
                continue
            undefined = undefined_metrics(metrics)
            if undefined:
                results["undefined"][task.name] = undefined
                metrics = {k: v for k, v in metrics.items() if k not in undefined}
            results["metrics"].update({f"{task.name}/{k}": v for k, v in metrics.items()})
            results["tasks"][task.name] = {"config": task.describe(), "seconds": round(time.perf_counter() - started, 2)}
            write_json_atomic(output_dir / "results.json", results, redacted=True)
    finally:
        model.train(was_training)
    results["complete"] = not results["failed"]
    write_json_atomic(output_dir / "results.json", results, redacted=True)
    return results
