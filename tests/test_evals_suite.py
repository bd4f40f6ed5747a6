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
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[PostFitEvaluation([task])])
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
