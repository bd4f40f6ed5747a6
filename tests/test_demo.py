"""The embedded default: the synthetic task, its verifier labelling, and the demo command end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch


def test_pairs_have_one_correct_answer_and_a_near_miss():
    from benchmarks.demos.sort_task import digits_of, make_pairs

    for row in make_pairs(200, seed=3):
        assert row["chosen"] == " ".join(map(str, sorted(digits_of(row["prompt"])))) == row["answer"]
        assert row["rejected"] != row["chosen"]
        wrong, right = row["rejected"].split(), row["chosen"].split()
        # one edit: a neighbour swap, one changed digit (same length) or one dropped digit
        assert len(right) - len(wrong) in (0, 1)


def test_own_mistakes_become_rejected_only_when_well_formed():
    from benchmarks.demos.sort_task import label_own_mistakes

    rows = [{"prompt": "sort: 3 1 2", "answer": "1 2 3"}] * 4
    outputs = ["1 2 4", "1 2 3", "1 2", "1 2 x"]  # wrong + well-formed, right, too short, garbage
    labelled, own = label_own_mistakes(rows, outputs, seed=0)
    assert own == 1 and labelled[0]["rejected"] == "1 2 4"
    for row in labelled:
        assert row["chosen"] == "1 2 3" and row["rejected"] != "1 2 3"
        assert len(row["rejected"].split()) == 3  # same length: DPO cannot learn length instead of sorting


@pytest.mark.slow
def test_demo_command_runs_end_to_end(tmp_path):
    from benchmarks.demos.demo import main

    results = main(["--out", str(tmp_path), "--sft-steps", "2", "--dpo-steps", "2", "--dpo-prompts", "16"])
    assert set(results) == {"reference (SFT)", "tuned (DPO)"}
    for name in ("reference", "tuned"):
        saved = json.loads((tmp_path / "eval" / name / "results.json").read_text())
        assert saved["complete"] and saved["metrics"]["sort_verifier/n"] == 500
    assert results["reference (SFT)"]["val/rewards/margins"] == 0.0  # compared with itself
    assert (tmp_path / "dpo" / "hf" / "config.json").is_file()
    # values of the trained model: DPO moved the policy away from its SFT start (reward margin no
    # longer exactly 0, loss no longer exactly the untrained log 2), and the numbers are finite
    tuned, start = results["tuned (DPO)"], results["reference (SFT)"]
    assert start["val/loss"] == pytest.approx(math.log(2), abs=1e-6)  # the untrained value, by definition
    assert math.isfinite(tuned["val/rewards/margins"]) and tuned["val/rewards/margins"] != 0.0
    assert math.isfinite(tuned["val/loss"]) and abs(tuned["val/loss"] - math.log(2)) > 1e-6
    from safetensors.torch import load_file

    sft, dpo = load_file(tmp_path / "sft" / "hf" / "model.safetensors"), load_file(tmp_path / "dpo" / "hf" / "model.safetensors")
    assert any(not torch.equal(sft[k], dpo[k]) for k in sft)
