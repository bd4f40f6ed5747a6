"""Suite plumbing: configs/eval YAMLs instantiate, the post-fit callback and the leaderboard command."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from evals import EvalTask, run_suite

ROOT = Path(__file__).resolve().parents[1]


class Constant(EvalTask):
    def __init__(self, name: str, value: float) -> None:
        self.name = name
        self.value = value
        self.calls = 0

    def run(self, model, tokenizer, output_dir):
        self.calls += 1
        output_dir.mkdir(parents=True, exist_ok=True)
        return {"score": self.value, "n": 3}


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "eval").glob("*.yaml")), ids=lambda p: p.name)
def test_eval_configs_instantiate(config):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--tasks", type=list[EvalTask])
    cfg = parser.parse_path(str(config))
    tasks = parser.instantiate_classes(cfg).tasks
    assert tasks and all(isinstance(t, EvalTask) for t in tasks)
    for task in tasks:
        described = json.dumps(task.describe())
        assert "api_key_env" in described or "judge" not in vars(task)


def test_post_fit_callback_runs_the_suite_on_rank_zero(tmp_path):
    import lightning as L
    import torch

    from callbacks.post_fit_eval import PostFitEvaluation
    from lit_align.models import TinyModel
    from tests.conftest import quiet_trainer

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            src = TinyModel(hidden_size=32, num_layers=1, num_heads=2)
            self.policy, self.tokenizer = src.load_model(), src.load_tokenizer()

        def training_step(self, batch, batch_idx):
            return self.policy(input_ids=batch[0]).logits.mean()

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randint(0, 100, (2, 8))), batch_size=2)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    task = Constant("const", 0.25)
    trainer = quiet_trainer(max_steps=1, default_root_dir=tmp_path, callbacks=[PostFitEvaluation([task])])
    trainer.fit(Module())
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert task.calls == 1 and results["complete"] and results["metrics"]["const/score"] == 0.25
    assert results["run"]["source"] == "post_fit" and results["run"]["global_step"] == 1


def test_leaderboard_command(tmp_path):
    from lit_align.models import TinyModel

    src = TinyModel(hidden_size=32, num_layers=1, num_heads=2)
    model, tok = src.load_model(), src.load_tokenizer()
    for run, value in (("dpo", 0.7), ("sft", 0.4)):
        run_suite(model, tok, [Constant("const", value)], tmp_path / "runs" / run / "eval")
    partial = tmp_path / "runs" / "crashed" / "eval" / "results.json"
    partial.parent.mkdir(parents=True)
    partial.write_text(json.dumps({"complete": False, "metrics": {"const/score": 0.9, "note": "x"}}))
    paths = sorted(str(p) for p in (tmp_path / "runs").glob("*/eval/results.json"))
    out = subprocess.run([sys.executable, "-m", "evals.leaderboard", *paths, "--out", str(tmp_path / "lb"), "--sort", "const/score"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "| run | complete | const/n | const/score |"
    assert lines[2].startswith("| crashed | NO |") and lines[3] == "| dpo | yes | 3 | 0.7 |" and lines[4] == "| sft | yes | 3 | 0.4 |"
    rows = list(csv.DictReader(open(tmp_path / "lb" / "leaderboard.csv")))
    assert [r["run"] for r in rows] == ["crashed", "dpo", "sft"] and rows[1]["const/score"] == "0.7"
    assert (tmp_path / "lb" / "leaderboard.png").stat().st_size > 0



@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["fsdp2", "ddp"])
def test_post_fit_evaluation_with_two_processes_equals_one_process_on_the_export(strategy, tmp_path):
    """Two gloo processes, 2 steps, then PostFitEvaluation with a generation task and a likelihood
    task. Under FSDP2 the policy is sharded, so rank 0 alone cannot run it: every rank gathers the
    weights and rank 0 evaluates a plain copy while rank 1 waits. The results must be those of one
    process evaluating the exported (gathered) weights: the same greedy answers token for token, the
    same answer log-likelihood (float64 sums of float32 log-probs; measured difference 0, compared
    at 1e-9 relative for other thread counts). The likelihood tells trained from starting weights
    (greedy answers of the tiny model often do not), so the check cannot pass on stale weights."""
    import yaml

    from evals.base import read_jsonl
    from evals.verifier import VerifierTask
    from lit_align.models import TinyModel
    from benchmarks.demos.sort_task import write_task
    from tests.evals_support.likelihood_task import AnswerLogLikelihood
    from tests.helpers_distributed import launch, write_config

    data = tmp_path / "data"
    write_task(data, train=16, val=1, test=4)
    verifier = {"data_path": str(data / "test.jsonl"), "name": "sort", "max_new_tokens": 8, "batch_size": 4}
    likelihood = {"data_path": str(data / "test.jsonl"), "name": "likelihood"}
    config_path = write_config(tmp_path / "fit", data, batch_size=2, steps=2)
    config = yaml.safe_load(config_path.read_text())
    config["trainer"]["callbacks"].append({
        "class_path": "callbacks.post_fit_eval.PostFitEvaluation",
        "init_args": {"output_dir": str(tmp_path / "eval"), "tasks": [
            {"class_path": "evals.verifier.VerifierTask", "init_args": verifier},
            {"class_path": "tests.evals_support.likelihood_task.AnswerLogLikelihood", "init_args": likelihood},
        ]},
    })
    config_path.write_text(yaml.safe_dump(config))
    launch("fit", config_path, strategy=strategy, devices=2)

    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["complete"] and results["run"]["source"] == "post_fit" and results["run"]["global_step"] == 2

    from transformers import AutoModelForCausalLM

    source = TinyModel(hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=128)  # write_config's model
    tokenizer = source.load_tokenizer()

    def evaluate(model, name: str) -> dict:
        return run_suite(model, tokenizer, [VerifierTask(**verifier), AnswerLogLikelihood(**likelihood)], tmp_path / name)["metrics"]

    single = evaluate(AutoModelForCausalLM.from_pretrained(tmp_path / "fit" / "run" / "hf"), "single")
    metrics = results["metrics"]
    assert metrics["sort/n"] == metrics["likelihood/n"] == 4
    assert {k: v for k, v in metrics.items() if k.startswith("sort/")} == {k: v for k, v in single.items() if k.startswith("sort/")}
    assert metrics["likelihood/logp_sum"] == pytest.approx(single["likelihood/logp_sum"], rel=1e-9, abs=0)
    answers = [row for _, row in read_jsonl(tmp_path / "eval" / "sort" / "answers.jsonl")]
    assert answers == [row for _, row in read_jsonl(tmp_path / "single" / "sort" / "answers.jsonl")]
    start = evaluate(source.load_model(), "start")
    assert abs(start["likelihood/logp_sum"] - single["likelihood/logp_sum"]) > 1e-3


def evaluate_with(tmp_path: Path, fit_config: Path, data: Path, name: str, ckpt: Path, strategy: str | None,
                  devices: int) -> dict:
    """``cli.py evaluate`` of ``ckpt`` with the fit's config, its val pairs and a likelihood task; the results."""
    import yaml

    from tests.helpers_distributed import launch, save_config

    config = yaml.safe_load(fit_config.read_text())
    # write_config's fit skips validation; no logger, so the config is saved under default_root_dir
    config["trainer"].update(callbacks=[], logger=False, limit_val_batches=1.0, default_root_dir=str(tmp_path / name))
    config["data"]["init_args"]["val_path"] = str(data / "val.jsonl")
    config["tasks"] = [{"class_path": "tests.evals_support.likelihood_task.AnswerLogLikelihood",
                        "init_args": {"data_path": str(data / "test.jsonl"), "name": "likelihood"}}]
    config.update(output_dir=str(tmp_path / name), ckpt_path=str(ckpt))
    launch("evaluate", save_config(config, tmp_path / f"evaluate_{name}.yaml"), strategy=strategy, devices=devices)
    return json.loads((tmp_path / name / "results.json").read_text())


def assert_same_metrics(single: dict, sharded: dict) -> None:
    assert sharded["complete"] and set(single["metrics"]) == set(sharded["metrics"])
    assert "val/loss" in single["metrics"] and single["metrics"]["likelihood/n"] == 4
    for key, value in single["metrics"].items():
        assert sharded["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


@pytest.mark.slow
@pytest.mark.distributed
def test_cli_evaluate_with_two_fsdp2_processes_equals_one_process(tmp_path):
    """``cli.py evaluate`` on two FSDP2 processes, of an FSDP2 run's DCP checkpoint and of a one-process
    run's single-file checkpoint: validation shards the policy, so the suite that follows must gather it
    (rank 0 alone cannot run a sharded forward) instead of hanging, and a single-file checkpoint, which
    leaves the frozen reference out, must still load. The held-out metrics (7 val pairs: one rank gets a
    repeat) and the task results equal one process evaluating the same run's HF export (same policy;
    the frozen reference is rebuilt from the same source on both sides)."""
    from benchmarks.demos.sort_task import write_task
    from tests.helpers_distributed import launch, write_config

    data = tmp_path / "data"
    write_task(data, train=16, val=7, test=4)
    for fit, strategy, devices in (("fit_fsdp2", "fsdp2", 2), ("fit_one", None, 1)):
        fit_config = write_config(tmp_path / fit, data, batch_size=2, steps=2)
        launch("fit", fit_config, strategy=strategy, devices=devices)
        run = tmp_path / fit / "run"
        assert (run / "checkpoints" / "last.ckpt").is_dir() == (strategy == "fsdp2")  # DCP folder, else one file
        single = evaluate_with(tmp_path, fit_config, data, f"{fit}-single", run / "hf", None, 1)
        sharded = evaluate_with(tmp_path, fit_config, data, f"{fit}-fsdp2", run / "checkpoints" / "last.ckpt", "fsdp2", 2)
        assert_same_metrics(single, sharded)
