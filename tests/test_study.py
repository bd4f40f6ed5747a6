"""The study runner on a 2-fit grid: one seed, two arms (DPO, DPOP) from one shared SFT start.

Checked against the files the same ``cli.py`` commands write (results.json, answers.jsonl), with
the paired counts recomputed by hand; a second run resumes from the done markers and fits nothing.
"""

from __future__ import annotations

import json
import math
from math import comb
from pathlib import Path

import pytest
import yaml

import cli
from benchmarks.studies.report import mcnemar
from benchmarks.studies.study import Study, StudyConfig, main
from lit_align.data.sources import read_jsonl

TINY_SFT = ["--model.model.init_args.hidden_size=32", "--model.model.init_args.num_layers=1",
            "--model.model.init_args.num_heads=2", "--trainer.max_steps=3", "--data.init_args.batch_size=8"]
STEPS = ["--trainer.max_steps=2", "--data.init_args.batch_size=8", "--trainer.log_every_n_steps=1"]


def study_file(tmp_path) -> str:
    config = {
        "title": "tiny", "seeds": [0], "data": {"train": 48, "val": 8, "test": 12}, "pairs": "own_mistakes",
        "pair_prompts": 16, "sft_args": TINY_SFT, "starts": {"long": ["--trainer.max_steps=4"]}, "base_args": STEPS, "baseline": "dpo",
        "curves": ["train/logps/chosen"],
        "arms": [
            {"name": "dpo", "config": {"model": {"loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.1}}}}},
            {"name": "dpop", "args": ["--model.lr=1.0e-3"], "config": {"model": {
                "loss": {"class_path": "lit_align.losses.DPOP", "init_args": {"beta": 0.1, "lam": 5.0}},
                # a "stronger" reference: the extra start, trained longer
                "reference": {"class_path": "lit_align.reference.FrozenReference", "init_args": {
                    "source": {"class_path": "lit_align.models.PretrainedModel", "init_args": {"path": "{start:long}"}}}}}}},
        ],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_mcnemar_exact():
    """fixed 3, broken 0: p = 2 * C(3,0) / 2^3 = 0.25; 5 / 5: p = 1 (capped); none discordant: 1."""
    assert mcnemar(3, 0) == 0.25 and mcnemar(0, 3) == 0.25
    assert mcnemar(5, 5) == 1.0 and mcnemar(0, 0) == 1.0
    assert mcnemar(10, 2) == pytest.approx(2 * sum(comb(12, k) for k in range(3)) / 2**12)


@pytest.mark.slow
def test_study_two_fit_grid(tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = []
    real_main = cli.main
    monkeypatch.setattr(cli, "main", lambda args: calls.append(args) or real_main(args))
    summary = main(["--config", study_file(tmp_path), "--out", str(out), "--publish", str(tmp_path / "pub")])
    # 2 SFT starts, 2 arms; the 2 starts and the 2 arms evaluated
    assert [a[0] for a in calls] == ["fit"] * 4 + ["evaluate"] * 4

    seed = out / "seed_0"
    study = Study(StudyConfig.load(study_file(tmp_path)), out)
    start, long = study.start_dir(0, []) / "hf", study.start_dir(0, ["--trainer.max_steps=4"]) / "hf"
    assert start.parent.parent == long.parent.parent.parent / start.parent.parent.name and start != long
    for arm, loss in (("dpo", "DPO"), ("dpop", "DPOP")):  # each arm's own loss, from the shared SFT start
        saved = yaml.safe_load((seed / arm / "config.yaml").read_text())
        assert saved["model"]["loss"]["class_path"] == f"lit_align.losses.{loss}"
        assert saved["model"]["model"]["init_args"]["path"] == str(start)
    dpop = yaml.safe_load((seed / "dpop" / "config.yaml").read_text())["model"]
    assert dpop["lr"] == 1e-3 and dpop["reference"]["init_args"]["source"]["init_args"]["path"] == str(long)

    for name in ("start", "start_long", "dpo", "dpop"):
        metrics = json.loads((seed / "eval" / name / "results.json").read_text())["metrics"]
        row = summary["arms"][name]["metrics"]
        assert row["sort_verifier/accuracy"]["seeds"] == [metrics["sort_verifier/accuracy"]]
        assert row["sort_verifier/accuracy"]["sd"] == 0.0
    assert summary["arms"]["start"]["metrics"]["val/rewards/margins"]["mean"] == 0.0  # the reference itself

    def correct(name):
        return [row["correct"] for row in read_jsonl(seed / "eval" / name / "sort_verifier" / "answers.jsonl")]

    base, dpop = correct("dpo"), correct("dpop")
    fixed, broken = sum(d and not b for d, b in zip(dpop, base)), sum(b and not d for d, b in zip(dpop, base))
    assert summary["arms"]["dpop"]["vs_baseline"] == {"fixed": fixed, "broken": broken, "p": mcnemar(fixed, broken)}
    assert summary["arms"]["dpo"]["vs_baseline"] == {"fixed": 0, "broken": 0, "p": 1.0}
    assert sorted(summary["curves"]["dpo"]["train/logps/chosen"][0]) == [0, 1]  # one point per step, from metrics.csv
    table = (out / "study.md").read_text()
    assert "| dpop |" in table and "| start |" in table
    assert (tmp_path / "pub" / "study.png").stat().st_size > 1000 and (tmp_path / "pub" / "study.md").read_text() == table

    calls.clear()  # a second run resumes from the markers: nothing is fit or evaluated again
    again = main(["--config", study_file(tmp_path), "--out", str(out)])
    assert calls == [] and again["arms"] == json.loads(json.dumps(summary["arms"]))


def test_study_config_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"title": "x", "baseline": "a", "arms": [{"name": "a"}], "sedes": [0]}))
    with pytest.raises(ValueError, match=r"bad.yaml: unknown study key\(s\) \['sedes'\]"):
        StudyConfig.load(path)
    path.write_text(yaml.safe_dump({"title": "x", "baseline": "b", "arms": [{"name": "a"}]}))
    with pytest.raises(ValueError, match="baseline 'b' is not an arm"):
        StudyConfig.load(path)


def other_tokenizer_file(tmp_path) -> str:
    """A study whose extra start has another tokenizer (word-level) and is a DPO arm's reference through columns."""
    columns = {"class_path": "lit_align.reference.DatasetColumnReference"}
    config = {
        "title": "tiny other tokenizer", "seeds": [0], "data": {"train": 48, "val": 8, "test": 12}, "pairs": "own_mistakes",
        "pair_prompts": 16, "sft_args": TINY_SFT, "starts": {"word": ["--model.model.init_args.tokenizer=word", "--trainer.max_steps=4"]},
        "other_tokenizer_starts": ["word"], "base_args": STEPS, "baseline": "dpo", "curves": ["train/logps/chosen"],
        "arms": [
            {"name": "dpo", "config": {"model": {"loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.1}}}}},
            {"name": "word_ref", "reference_columns": {"start": "word", "max_length": 128},
             "config": {"model": {"loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.5}}, "reference": columns}}},
        ],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_study_reference_with_another_tokenizer(tmp_path, monkeypatch):
    """The word-level start is fit by cli.py, scores the arm's pairs by its own tokenisation, and the arm
    trains and is evaluated against those columns: each column equals a hand sum of the word model's
    log-softmax over its own completion tokens, and the arm's held-out rewards are beta * (policy - column)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import lit_align.reference_columns as reference_columns

    out, calls = tmp_path / "out", []
    real_main, real_columns = cli.main, reference_columns.main
    monkeypatch.setattr(cli, "main", lambda args: calls.append(args) or real_main(args))
    monkeypatch.setattr(reference_columns, "main", lambda args: calls.append(["columns", *args]) or real_columns(args))
    summary = main(["--config", other_tokenizer_file(tmp_path), "--out", str(out)])
    # 2 SFT starts, the dpo arm, the word start's columns of the train and the val pairs, the word_ref arm; 4 evaluations
    assert [a[0] for a in calls] == ["fit"] * 3 + ["columns"] * 2 + ["fit"] + ["evaluate"] * 4

    seed, study = out / "seed_0", Study(StudyConfig.load(other_tokenizer_file(tmp_path)), out)
    word = study.start_dir(0, ["--model.model.init_args.tokenizer=word", "--trainer.max_steps=4"]) / "hf"
    model, tok = AutoModelForCausalLM.from_pretrained(word).eval(), AutoTokenizer.from_pretrained(word)
    assert len(tok) == 18 and model.config.vocab_size == 18  # 4 special tokens + system/user/assistant/sort: + 10 digits

    arm = yaml.safe_load((seed / "word_ref" / "config.yaml").read_text())
    assert arm["model"]["reference"]["class_path"] == "lit_align.reference.DatasetColumnReference"
    train, val = Path(arm["data"]["init_args"]["train_path"]), Path(arm["data"]["init_args"]["val_path"])
    pairs = read_jsonl(study.start_dir(0, []) / "pairs_16.jsonl")
    assert [{k: r[k] for k in pairs[0]} for r in read_jsonl(train)] == pairs  # every pair kept, columns added
    for row in read_jsonl(train)[:3] + read_jsonl(val)[:3]:
        prompt = tok.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        for key in ("chosen", "rejected"):
            c_ids = [tok.convert_tokens_to_ids(w) for w in row[key].split()] + [tok.eos_token_id]
            ids = torch.tensor([p_ids + c_ids])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            expected = sum(float(logp[len(p_ids) - 1 + i, t]) for i, t in enumerate(c_ids))
            assert abs(row[f"ref_{key}_logps"] - expected) < 1e-4, key

    metrics = json.loads((seed / "eval" / "word_ref" / "results.json").read_text())["metrics"]
    ref_chosen = sum(r["ref_chosen_logps"] for r in read_jsonl(val)) / 8  # the 8 val pairs: one batch
    assert metrics["val/rewards/chosen"] == pytest.approx(0.5 * (metrics["val/logps/chosen"] - ref_chosen), abs=1e-3)
    # the word start is evaluated with its own SFT config: only its verifier accuracy is tabulated
    own = json.loads((seed / "eval" / "start_word" / "results.json").read_text())
    assert summary["arms"]["start_word"]["metrics"] == {"sort_verifier/accuracy": {
        "mean": own["metrics"]["sort_verifier/accuracy"], "sd": 0.0, "seeds": [own["metrics"]["sort_verifier/accuracy"]]}}
    assert "val/rewards/margins" in summary["arms"]["word_ref"]["metrics"]

    calls.clear()  # resumes from the markers: no fit, no columns, no evaluation again
    main(["--config", other_tokenizer_file(tmp_path), "--out", str(out)])
    assert calls == []


RECIPE = "configs/recipes/smollm2_dpo_lora.yaml"


def stand_in_recipe(tmp_path) -> str:
    """The real-model recipe with a tiny byte-tokenizer model in place of SmolLM2 (same LoRA, reference, data format)."""
    from lit_align.models import save_tiny

    tiny = save_tiny(tmp_path / "tiny", hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=256)
    recipe = yaml.safe_load((Path(cli.__file__).parent / RECIPE).read_text())
    recipe["model"]["model"]["init_args"]["base"] = {"class_path": "lit_align.models.PretrainedModel", "init_args": {"path": str(tiny)}}
    recipe["trainer"].update(max_steps=2, log_every_n_steps=1)
    path = tmp_path / "stand_in_recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def hh_rows(n: int) -> list[dict]:
    """HH-RLHF-shaped transcripts (shared turns, a differing last assistant turn)."""
    return [{"chosen": f"\n\nHuman: what is {i} plus {i}?\n\nAssistant: {2 * i}.",
             "rejected": f"\n\nHuman: what is {i} plus {i}?\n\nAssistant: I will not say."} for i in range(n)]


@pytest.mark.slow
def test_study_over_a_real_model_recipe(tmp_path, monkeypatch, capsys):
    """``--over RECIPE``: no SFT start, the arms fit over the recipe's model from real_demo's pairs, the untuned model
    and each arm evaluated on the held-out pairs; arms that need the task's SFT starts are left out, named."""
    from benchmarks.demos.real_demo import write_split

    hh = tmp_path / "hh.jsonl"
    hh.write_text("".join(json.dumps(r) + "\n" for r in hh_rows(12)))
    data = write_split(hh, tmp_path / "data", train=8, val=4, max_chars=300)
    config = yaml.safe_load(Path(other_tokenizer_file(tmp_path)).read_text())
    config["arms"].append({"name": "dpo_5", "config": {"model": {"loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": 5.0}},
                           "reference": {"class_path": "lit_align.reference.CachedReference", "init_args": {"cache_dir": "{starts}/cache"}}}}})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))

    out, calls = tmp_path / "out", []
    real_main = cli.main
    monkeypatch.setattr(cli, "main", lambda args: calls.append(args) or real_main(args))
    recipe = stand_in_recipe(tmp_path)
    summary = main(["--config", str(tmp_path / "study.yaml"), "--over", recipe, "--data", str(data["train"].parent), "--out", str(out)])
    assert "left out the arms that need the task's SFT starts: ['word_ref']" in capsys.readouterr().out
    # no SFT start, no pairs of its own: two fits, then the untuned model and the two arms evaluated
    assert [a[0] for a in calls] == ["fit", "fit", "evaluate", "evaluate", "evaluate"]
    assert all(a[a.index("--config") + 1] == recipe for a in calls[:2])
    assert f"--data.init_args.train_path={data['train']}" in calls[0] and "--ckpt_path" not in calls[2]

    seed = out / "seed_0"
    for arm, beta, reference in (("dpo", 0.1, "AdapterDisabledReference"), ("dpo_5", 5.0, "CachedReference")):
        saved = yaml.safe_load((seed / arm / "config.yaml").read_text())["model"]
        assert saved["model"]["class_path"] == "lit_align.peft_config.LoraSource"  # the recipe's model, not a start
        assert saved["reference"]["class_path"] == f"lit_align.reference.{reference}"  # the recipe's, or the arm's own
        assert saved["loss"]["init_args"]["beta"] == beta
    start = json.loads((seed / "eval" / "start" / "results.json").read_text())["metrics"]
    # untuned: the LoRA adapter is zero, so the policy is its reference: margin 0 and DPO loss ln 2 exactly
    assert abs(start["val/rewards/margins"]) < 1e-6 and start["val/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert "sort_verifier/accuracy" not in start and set(summary["arms"]) == {"start", "dpo", "dpo_5"}
    for name in ("dpo", "dpo_5"):
        metrics = json.loads((seed / "eval" / name / "results.json").read_text())["metrics"]
        assert summary["arms"][name]["metrics"]["val/rewards/margins"]["seeds"] == [metrics["val/rewards/margins"]]
        assert summary["arms"][name]["vs_baseline"] is None  # no verifier: nothing to pair per prompt
    assert metrics["val/rewards/margins"] != 0.0  # trained: the adapter moved
    assert sorted(summary["curves"]["dpo_5"]["train/logps/chosen"][0]) == [0, 1]
    assert (out / "study.png").stat().st_size > 1000 and "| dpo_5 |" in (out / "study.md").read_text()


def test_every_study_names_a_real_model_command_that_parses(tmp_path):
    """Each study's header gives ``--over configs/recipes/smollm2_dpo_lora.yaml``; every arm it keeps parses over
    the real recipe (``cli.py fit --print_config``: no weights are loaded)."""
    from benchmarks.studies.study import REPO, over_pretrained, substitute

    studies = sorted((REPO / "configs" / "studies").glob("*.yaml"))
    assert len(studies) >= 6
    for path in studies:
        header = path.read_text().split("\ntitle:")[0]
        assert f"python -m benchmarks.studies.study --config configs/studies/{path.name} --over {RECIPE}" in header, path.name
        assert "python -m benchmarks.demos.real_demo --prepare-only" in header, path.name
        study, dropped = over_pretrained(StudyConfig.load(path), RECIPE, tmp_path)
        assert study.arms and study.baseline not in dropped
        for arm in study.arms:
            layer = tmp_path / f"{path.stem}_{arm.name}.yaml"
            layer.write_text(yaml.safe_dump(substitute(arm.config, {"starts": str(tmp_path)})))
            with pytest.raises(SystemExit) as done:
                cli.main(["fit", "--config", str(REPO / RECIPE), "--config", str(layer), *substitute(arm.args, {}), "--print_config"])
            assert done.value.code in (0, None), (path.name, arm.name)


def test_tiny_model_with_the_word_tokenizer():
    """tokenizer: word -- one id per sort-task word (digits, "sort:", roles), ChatML, decoded answers round-trip;
    the byte model's identity (reference cache keys) is unchanged by the option."""
    from lit_align.errors import ConfigError
    from lit_align.models import TinyModel

    word = TinyModel(tokenizer="word")
    tok = word.load_tokenizer()
    ids = tok("sort: 7 0 3", add_special_tokens=False)["input_ids"]
    assert len(ids) == 4 and tok.unk_token_id not in ids and tok.decode(ids) == "sort: 7 0 3"
    assert tok("hello", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    prompt = tok.apply_chat_template([{"role": "user", "content": "sort: 2 1"}], tokenize=False, add_generation_prompt=True)
    assert tok.convert_ids_to_tokens(tok(prompt, add_special_tokens=False)["input_ids"]) == [
        "<|im_start|>", "user", "sort:", "2", "1", "<|im_end|>", "<|im_start|>", "assistant"]
    assert word.config().vocab_size == len(tok) == 18 and word.config().eos_token_id == tok.eos_token_id
    assert "tokenizer" not in TinyModel().identity() and '"tokenizer": "word"' in word.identity()
    with pytest.raises(ConfigError, match="unknown tokenizer 'bpe'"):
        TinyModel(tokenizer="bpe")
