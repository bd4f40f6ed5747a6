"""lm-eval tasks on the in-memory model agree with lm-eval's own command line on the exported model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evals import run_suite
from evals.lm_eval_tasks import LmEvalTasks, flatten_results
from lit_align.data.sources import read_jsonl

QUESTIONS = [
    ("The sky on a clear day is", ["blue", "green", "made of cheese", "loud"], 0),
    ("Two plus two equals", ["four", "five", "seven", "a fish"], 0),
    ("Water freezes at zero degrees", ["Celsius", "Kelvin", "Fahrenheit", "Newton"], 0),
    ("The capital of France is", ["Paris", "Rome", "Lima", "Oslo"], 0),
    ("Cats usually have", ["four legs", "six legs", "no legs", "wheels"], 0),
    ("The opposite of hot is", ["cold", "warm", "tall", "blue"], 0),
]


def _local_task(tmp_path: Path) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_mc.yaml").write_text(f"""task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")
    return tasks


def test_flatten_keeps_non_default_filters():
    out = flatten_results({"results": {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.5, "acc,none": 0.25}},
                           "groups": {"g": {"acc,none": 0.1}}})
    assert out == {"gsm8k/exact_match,strict-match": 0.5, "gsm8k/acc": 0.25, "g/acc": 0.1}


@pytest.mark.slow
def test_local_task_matches_lm_eval_cli_and_hub_task_fails(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lit_align.models import save_tiny

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir = save_tiny(tmp_path / "tiny", hidden_size=32, num_layers=1, num_heads=2)
    tasks_dir = _local_task(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    task = LmEvalTasks(tasks=["tiny_mc", "arc_easy", "no_such_task_xyz"], include_path=[str(tasks_dir)],
                       include_defaults=True, num_fewshot=0, batch_size=2, bootstrap_iters=0)
    res = run_suite(model, tok, [task], tmp_path / "eval")
    assert not res["complete"] and not res["skipped"]  # a task that cannot load is a failed one, never skipped
    reason = res["failed"]["lm_eval"]["reason"]
    assert "2 of 3 lm-eval tasks cannot run here" in reason and "arc_easy" in reason and "no_such_task_xyz" in reason
    m = {f"lm_eval/{k}": v for k, v in res["failed"]["lm_eval"]["metrics"].items()}  # the task that ran keeps its numbers
    record = json.loads((tmp_path / "eval" / "lm_eval" / "lm_eval_results.json").read_text())
    assert record["flags"]["apply_chat_template"] is False and record["flags"]["fewshot_as_multiturn"] is False
    assert (tmp_path / "eval" / "lm_eval" / "samples_tiny_mc.jsonl").exists()

    cli_out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
           "--include_path", str(tasks_dir), "--tasks", "tiny_mc", "--num_fewshot", "0", "--batch_size", "2",
           "--device", "cpu", "--output_path", str(cli_out), "--log_samples"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = json.loads(next(cli_out.rglob("results_*.json")).read_text())["results"]["tiny_mc"]
    assert m["lm_eval/tiny_mc/acc"] == pytest.approx(cli["acc,none"], abs=1e-12)
    assert m["lm_eval/tiny_mc/acc_norm"] == pytest.approx(cli["acc_norm,none"], abs=1e-12)
    # accuracy on 6 items is coarse: compare every per-choice log-likelihood as well
    ours = read_jsonl(tmp_path / "eval" / "lm_eval" / "samples_tiny_mc.jsonl")
    theirs = read_jsonl(next(cli_out.rglob("samples_tiny_mc_*.jsonl")))
    lls = lambda rows: [float(r[0]) for s in sorted(rows, key=lambda s: s["doc_id"]) for r in s["filtered_resps"]]  # noqa: E731
    assert len(ours) == len(QUESTIONS) and lls(ours) == pytest.approx(lls(theirs), abs=1e-5)


@pytest.mark.slow
def test_shipped_offline_task_runs_from_the_repo_config(monkeypatch, tmp_path):
    """configs/eval/local_tasks.yaml's arith_mc (evals/local_tasks/) runs with no network, from the repository root."""
    import yaml

    from lit_align.models import TinyModel

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    init = yaml.safe_load((repo / "configs" / "eval" / "local_tasks.yaml").read_text())["tasks"][0]["init_args"]
    source = TinyModel(hidden_size=32, num_layers=1, num_heads=2)
    task = LmEvalTasks(**{**init, "batch_size": 8, "bootstrap_iters": 0, "limit": 12, "log_samples": False})
    metrics = task.run(source.load_model().eval(), source.load_tokenizer(), tmp_path / "out")
    assert 0.0 <= metrics["arith_mc/acc"] <= 1.0 and "arith_mc/acc_norm" in metrics


def test_unknown_task_fails_the_evaluation_without_any_hub(tmp_path):
    task = LmEvalTasks(tasks=["no_such_task_xyz"], include_path=[str(_local_task(tmp_path))], include_defaults=False)
    from lit_align.models import TinyModel

    source = TinyModel(hidden_size=32, num_layers=1, num_heads=2)
    res = run_suite(source.load_model(), source.load_tokenizer(), [task], tmp_path / "eval")
    assert not res["complete"] and "no_such_task_xyz: unknown task" in res["failed"]["lm_eval"]["reason"]
