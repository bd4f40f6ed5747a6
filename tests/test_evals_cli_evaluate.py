"""``cli.py evaluate`` end to end on tiny models: a recipe with ``limit_val_batches: 0`` and no pairs file works,
and answers saved by one model are never scored as another's (issue 18 points 3 and 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import cli  # imported before capsys: Lightning binds its log handler to the stderr of import time
from tests.evals_support.fake_openai import FakeOpenAIServer

MT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mt_bench"


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _config(tmp_path: Path, seed: int, tasks: list[dict], data: bool = False, max_new_tokens: int = 3) -> Path:
    config = {
        "model": {"model": {"class_path": "lit_align.models.TinyModel",
                            "init_args": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "seed": seed,
                                          "max_position_embeddings": 4096}}},
        "trainer": {"accelerator": "cpu", "logger": False},
        "tasks": tasks,
    }
    if data:  # as configs/recipes/smollm2_dpo_lora.yaml: pairs named, not there, validation off
        config["data"] = {"class_path": "lit_align.data.PreferenceDataModule",
                          "init_args": {"train_path": str(tmp_path / "absent_train.jsonl"),
                                        "val_path": str(tmp_path / "absent_val.jsonl"), "batch_size": 4}}
        config["trainer"]["limit_val_batches"] = 0
    path = tmp_path / f"config_{seed}_{max_new_tokens}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _verifier(tmp_path: Path) -> dict:
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a} + {a}?", "answer": str(2 * a)}) + "\n" for a in range(4)))
    return {"class_path": "evals.verifier.VerifierTask", "init_args": {"data_path": str(data), "max_new_tokens": 4}}


def test_evaluate_with_validation_off_needs_no_pairs_file(tmp_path, capsys):
    out = tmp_path / "eval"
    rc = cli.run(["evaluate", "--config", str(_config(tmp_path, 0, [_verifier(tmp_path)], data=True)), "--output_dir", str(out)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["metrics"]["verifier/n"] == 4
    assert not any(k.startswith("val") for k in results["metrics"])  # no held-out pass was asked for


def _mt_task(url: str, max_new_tokens: int) -> dict:
    return {"class_path": "evals.mt_bench.MTBench", "init_args": {
        "question_file": str(MT / "question.jsonl"), "limit": 1, "max_new_tokens": max_new_tokens,
        "judge": {"class_path": "evals.judge.JudgeClient", "init_args": {
            "model": "judge-x", "base_url": url, "api_key_env": "FAKE_JUDGE_KEY", "timeout": 5, "max_retries": 1}}}}


def test_answers_of_another_model_in_the_output_dir_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test-identity")
    out = tmp_path / "eval"
    with FakeOpenAIServer(responder=lambda body: {"content": "Rating: [[7]]"}) as server:
        run = lambda seed, tokens=3: cli.run(["evaluate", "--config", str(_config(tmp_path, seed, [_mt_task(server.base_url, tokens)])),  # noqa: E731
                                              "--output_dir", str(out)])
        assert run(0) == 0, capsys.readouterr().err[-2000:]
        answers = (out / "mt_bench" / "answers.jsonl").read_text()
        assert run(0) == 0  # the same model again: its saved answers are reused
        capsys.readouterr()
        for other in (lambda: run(1), lambda: run(0, tokens=5)):  # other weights; other generation settings
            assert other() == 1
            lines = _errors(capsys.readouterr().err)
            assert len(lines) == 1 and "holds 1 answers of another model or other generation settings" in lines[0], lines
            assert "fresh --output_dir" in lines[0]
    assert (out / "mt_bench" / "answers.jsonl").read_text() == answers  # nothing overwritten
    judged = [json.loads(x) for x in (out / "mt_bench" / "judgments.jsonl").read_text().splitlines()]
    assert {j["model"] for j in judged} == {json.loads(answers.splitlines()[0])["identity"]}  # judgments keyed too


@pytest.mark.parametrize("change", ["weights", "nan"])
def test_identity_follows_the_weights(change):
    import torch

    from evals.answers import model_identity
    from lit_align.models import TinyModel

    source = TinyModel(hidden_size=32, num_layers=1, num_heads=2)
    model, tokenizer = source.load_model(), source.load_tokenizer()
    before = model_identity(model, tokenizer, {"max_new_tokens": 3})
    assert model_identity(source.load_model(), tokenizer, {"max_new_tokens": 3}) == before  # same weights, same identity
    assert model_identity(model, tokenizer, {"max_new_tokens": 4}) != before
    with torch.no_grad():
        param = next(model.parameters())
        param[0, 0] = float("nan") if change == "nan" else param[0, 0] + 1e-6
    assert model_identity(model, tokenizer, {"max_new_tokens": 3}) != before
