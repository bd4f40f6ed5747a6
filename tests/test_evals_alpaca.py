"""AlpacaEval: official leaderboard row from stored annotations, logprob preference, LC GLM, judge flow."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.evals_support.fake_openai import FakeOpenAIServer

from evals import run_suite  # noqa: E402
from evals.alpaca_eval import AlpacaEval, fill, is_swapped, load_prompt  # noqa: E402
from evals.alpaca_metrics import load_annotations, metrics_from_annotations  # noqa: E402
from evals.judge import JudgeClient  # noqa: E402
from evals.judge.parsing import alpaca_preference  # noqa: E402
from evals.length_control import length_controlled_winrate  # noqa: E402

AE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alpaca_eval"
ANNOTATIONS = AE / "annotations" / "alpaca-7b_weighted_alpaca_eval_gpt4_turbo.json"
KEY = "sk-test-SECRET-alpaca-9999"


@pytest.fixture(autouse=True)
def judge_key(monkeypatch):
    assert AE.is_dir(), f"shared data missing: {AE}"
    monkeypatch.setenv("FAKE_JUDGE_KEY", KEY)


def _official_row(model: str) -> dict[str, str]:
    with open(AE / "alpaca_eval2_leaderboard_weighted_alpaca_eval_gpt4_turbo.csv") as f:
        return next(r for r in csv.DictReader(f) if r[""] == model)


def test_stored_annotations_reproduce_official_leaderboard_row():
    row = _official_row("alpaca-7b")
    m = metrics_from_annotations(load_annotations(ANNOTATIONS))
    for key in ("win_rate", "standard_error", "discrete_win_rate"):
        assert m[key] == pytest.approx(float(row[key]), rel=1e-12, abs=1e-12), key
    for key in ("n_wins", "n_wins_base", "n_draws", "n_total", "avg_length"):
        assert m[key] == int(row[key]), key
    assert (m["win_rate"], m["standard_error"], m["discrete_win_rate"]) == pytest.approx((2.591450540223603, 0.4870855382635108, 2.298136645962733))


def official_switch(instruction: str) -> bool:
    """Whether alpaca_eval showed the judge the model's output first: its RandomSwitchTwoColumnsProcessor
    (alpaca_eval 0.6.6, processors.py / annotators/pairwise_evaluator.py) draws
    ``random.Random("is_switched_outputs" + instruction + str(seed)).choices([False, True])``, seed 0 for
    these annotations, and stores ``3 - p`` for switched rows."""
    import random

    return random.Random("is_switched_outputs" + instruction + "0").choices([False, True], k=1)[0]


def test_logprob_preference_matches_the_official_judge_annotations():
    """Our p_m formula on each stored raw completion, oriented by alpaca_eval's own switch, gives the
    stored preference on every row (a formula that returned 3 - p, i.e. confused m and M, fails on the
    about 400 rows that are not switched; one that ignored the switch fails on the others)."""
    checked = switched = 0
    for row in load_annotations(ANNOTATIONS):
        raw = row.get("raw_completion")
        if not isinstance(raw, dict) or not raw.get("logprobs"):
            continue
        top = raw["logprobs"]["content"][0]["top_logprobs"]
        pref = alpaca_preference(raw["message"]["content"], top)
        switch = official_switch(row["instruction"])
        assert (3 - pref if switch else pref) == pytest.approx(row["preference"], abs=1e-6), row["instruction"][:60]
        checked += 1
        switched += switch
    assert checked == 802 and 300 < switched < 500  # 3 rows have no logprobs; both orientations are exercised


def irls_soft_logistic(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Unpenalised logistic regression on soft labels by Newton's method (an independent fit)."""
    w = np.zeros(x.shape[1])
    for _ in range(100):
        mu = 1 / (1 + np.exp(-x @ w))
        step = np.linalg.solve((x * (mu * (1 - mu))[:, None]).T @ x, x.T @ (p - mu))
        w += step
        if np.abs(step).max() < 1e-12:
            break
    return w


def test_length_controlled_winrate_on_the_official_annotations():
    """The official LC figure for alpaca-7b (5.875 in the shipped leaderboard) needs per-instruction
    difficulty and the gamed baselines' annotations, which alpaca_eval downloads from the hub
    (glm_winrate._get_featurized_data) and the shared data lacks; so the length-only GLM is what can
    be checked here, against an independent unpenalised fit of alpaca_eval's featurisation
    (std_delta_len = (len(output_1) - len(output_2)) / std, preference - 1): our L1 fit with its
    cross-validated C shrinks the coefficients only slightly."""
    from evals.alpaca_lc import lc_metrics

    rows = load_annotations(ANNOTATIONS)
    assert float(_official_row("alpaca-7b")["length_controlled_winrate"]) == pytest.approx(5.875487163278986)
    ours = lc_metrics(rows)
    assert ours["lc_glm"] == "length_only_glm" and "length_controlled_winrate" not in ours  # never under the official name
    delta = np.array([len(r["output_1"]) - len(r["output_2"]) for r in rows], float)
    x = np.stack([np.tanh(delta / delta.std(ddof=1)), np.ones_like(delta)], axis=1)
    t_len, t_model = irls_soft_logistic(x, np.array([r["preference"] for r in rows], float) - 1)
    # the L1 penalty at the cross-validated C shrinks t_len by about 5% (-4.16 vs -4.39 unpenalised)
    assert ours["lc_t_len"] == pytest.approx(t_len, abs=0.3) and ours["lc_t_model"] == pytest.approx(t_model, abs=0.05)
    assert t_len < -4 and ours["lc_t_len"] < -4  # the judge favours the longer (baseline) output: a dlen mix-up flips it
    assert ours["length_controlled_winrate_length_only_glm"] == pytest.approx(100 / (1 + math.exp(-t_model)), abs=0.6)
    assert lc_metrics(rows) == ours  # reproducible: the same annotations give the same figure (liblinear is seeded)


def test_discrete_fallback_and_missing_identifier():
    assert alpaca_preference("m", None) == 1.0 and alpaca_preference(" M\n", None) == 2.0
    assert alpaca_preference("both", None) is None
    only_m = [{"token": "m", "logprob": -0.1}, {"token": "The", "logprob": -3.0}]
    assert alpaca_preference("m", only_m) == pytest.approx(1.0)  # M absent from the top 5: probability 0
    lp = [{"token": "M", "logprob": math.log(0.6)}, {"token": "m", "logprob": math.log(0.3)}]
    assert alpaca_preference("M", lp) == pytest.approx(2 - 1 / 3)


def test_length_only_glm_recovers_a_known_model_term():
    rng = np.random.default_rng(0)
    n = 800
    base_len = rng.integers(200, 3000, n).astype(float)
    model_len = base_len + rng.normal(0, 800, n)
    dlen = base_len - model_len
    t_len, t_model = -1.5, 0.4
    p = 1 / (1 + np.exp(-(t_len * np.tanh(dlen / dlen.std(ddof=1)) + t_model)))
    res = length_controlled_winrate(1 + p, model_len, base_len)
    assert res.kind == "length_only_glm"
    assert res.weights["t_len"] == pytest.approx(t_len, abs=0.1) and res.weights["t_model"] == pytest.approx(t_model, abs=0.1)
    assert res.win_rate == pytest.approx(100 / (1 + math.exp(-t_model)), abs=2.5)


def test_official_glm_weights_csv_has_alpaca_7b_and_our_terms():
    with open(AE / "lc_glm_weights_weighted_alpaca_eval_gpt4_turbo_baseline_gpt4_1106_preview.csv") as f:
        rows = {r[""]: r for r in csv.DictReader(f)}
    w = rows["alpaca-7b"]
    assert set(w) == {"", "np.tanh(std_delta_len)", "instruction_difficulty", "not_gamed_baseline.astype(float)"}
    # LC needs the per-instruction difficulty (not in shared data); with the length term at 0 and the
    # baseline's own all-zero weights the prediction is exactly 50 %.
    assert all(float(v) == 0 for k, v in rows["gpt4_1106_preview"].items() if k)


def test_prompt_file_is_parsed_and_filled():
    messages, version = load_prompt(str(AE / "alpaca_eval_clf_prompt.txt"))
    assert [r for r, _ in messages] == ["system", "user"] and version.startswith("alpaca_eval_clf_prompt.txt@")
    text = fill(messages[1][1], {"instruction": "I {output_2}", "output_1": "A", "output_2": "B"})
    assert '"""I {output_2}"""' in text and '"output": """A"""' in text and '"output": """B"""' in text
    assert sum(is_swapped(f"instruction {i}", 0) for i in range(1000)) in range(450, 551)


def _setup(tmp_path: Path, n: int) -> tuple[Path, Path]:
    instructions = [json.loads(x) for x in (AE / "alpaca_eval_805_instructions.jsonl").read_text().splitlines()][:n]
    baseline = {r["instruction"]: r for r in json.loads((AE / "gpt4_1106_preview_baseline_outputs.json").read_text())}
    ins_path = tmp_path / "ins.jsonl"
    ins_path.write_text("".join(json.dumps(r) + "\n" for r in instructions))
    base_path = tmp_path / "base.json"
    base_path.write_text(json.dumps([baseline[r["instruction"]] for r in instructions]))
    return ins_path, base_path


def test_judge_flow_with_logprobs_swap_identical_and_malformed(tmp_path):
    from lit_align.models import TinyModel

    src = TinyModel(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=8192)
    model, tok = src.load_model(), src.load_tokenizer()
    n = 24
    ins_path, base_path = _setup(tmp_path, n)
    baseline = json.loads(base_path.read_text())
    out_dir = tmp_path / "eval" / "alpaca_eval"
    out_dir.mkdir(parents=True)
    task = AlpacaEval(instructions_file=str(ins_path), baseline_outputs_file=str(base_path), judge=None,
                      judge_prompt_file=str(AE / "alpaca_eval_clf_prompt.txt"), max_new_tokens=4, min_coverage=0.95)
    # pre-stored model outputs of this model (the resumable store): row 0 equals the baseline (draw, not sent)
    outputs = [baseline[0]["output"]] + [f"short answer {i}" for i in range(1, n)]
    identity = task.identity(model, tok)
    from evals.alpaca_eval import load_records
    from evals.answers import item_inputs

    prompts = [r["instruction"] for r in load_records(str(ins_path), ("instruction",))]  # each row: its inputs' hash too
    (out_dir / "model_outputs.jsonl").write_text("".join(json.dumps({
        "index": i, "turns": [o], "identity": identity, "inputs": item_inputs({"turns": [prompts[i]], "temperature": 0.0})}) + "\n"
        for i, o in enumerate(outputs)))
    firsts = []

    def respond(body):
        user = body["messages"][-1]["content"]
        if "short answer 5\"" in user:
            return {"content": "I like both"}  # no logprobs, no identifier: parse failure
        first = user.split('"model_identifier": "m"')[1].split('"model_identifier": "M"')[0]
        baseline_first = "short answer" not in first
        firsts.append(baseline_first)
        p_m = 0.8 if baseline_first else 0.2  # the judge prefers the baseline with probability 0.8
        return {"content": "m" if p_m > 0.5 else "M",
                "top_logprobs": [{"token": "m", "logprob": math.log(p_m)}, {"token": "M", "logprob": math.log(1 - p_m)}]}

    with FakeOpenAIServer(responder=respond) as server:
        task.judge = JudgeClient(model="judge-x", base_url=server.base_url, api_key_env="FAKE_JUDGE_KEY", timeout=5)
        res = run_suite(model, tok, [task], tmp_path / "eval")
        assert server.count() == n - 1
        assert all(r["body"]["max_tokens"] == 1 and r["body"]["top_logprobs"] == 5 for r in server.log)
    m = res["metrics"]
    assert 0 < sum(firsts) < len(firsts)  # both positions used
    judged = n - 1  # row 5 unparseable: 23 of 24 covered, accepted by min_coverage 0.95 and reported
    assert res["complete"] and m["alpaca_eval/coverage"] == pytest.approx(judged / n) and m["alpaca_eval/min_coverage"] == 0.95
    assert m["alpaca_eval/parse_failures"] == 1 and m["alpaca_eval/n_total"] == judged
    assert m["alpaca_eval/win_rate"] == pytest.approx(100 * (0.5 + 0.2 * (judged - 1)) / judged)
    assert (m["alpaca_eval/n_wins"], m["alpaca_eval/n_draws"], m["alpaca_eval/n_wins_base"]) == (0, 1, judged - 1)
    assert m["alpaca_eval/discrete_win_rate"] == pytest.approx(100 * 0.5 / judged)
    assert m["alpaca_eval/lc_glm"] == "length_only_glm" and "alpaca_eval/length_controlled_winrate_length_only_glm" in m
    ann = json.loads((out_dir / "annotations.json").read_text())
    assert ann[0]["preference"] == 1.5 and all(a["generator_2"] == "model" for a in ann)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_baseline_missing_an_instruction_names_it(tmp_path):
    ins_path, base_path = _setup(tmp_path, 3)
    base_path.write_text(json.dumps(json.loads(base_path.read_text())[:2]))
    task = AlpacaEval(instructions_file=str(ins_path), baseline_outputs_file=str(base_path), judge=None)
    with pytest.raises(ValueError, match=r"base.json: no output for instruction 2"):
        task._baseline(json.loads("[" + ",".join(ins_path.read_text().splitlines()) + "]"))


def test_full_glm_with_difficulty_and_gamed_baselines():
    rng = np.random.default_rng(1)
    n = 600
    difficulty = rng.normal(0, 1, n)
    base_len = rng.integers(300, 2500, n).astype(float)
    t_len, t_diff, t_model = -1.0, 0.8, -0.5

    def prefs(model_len, indicator, std):
        logit = t_len * np.tanh((base_len - model_len) / std) + t_diff * difficulty + t_model * indicator
        return 1 + 1 / (1 + np.exp(-logit))

    model_len = base_len + rng.normal(-300, 600, n)
    verbose, concise = base_len * 1.8, base_len * 0.4
    std = np.std(np.concatenate([base_len - model_len, base_len - verbose, base_len - concise]), ddof=1)
    gamed = [(prefs(verbose, 0, std), verbose, base_len), (prefs(concise, 0, std), concise, base_len)]
    res = length_controlled_winrate(prefs(model_len, 1, std), model_len, base_len, difficulty, gamed)
    assert res.kind == "full_glm"
    assert res.weights["t_model"] == pytest.approx(t_model, abs=0.15) and res.weights["t_diff"] == pytest.approx(t_diff, abs=0.15)
    expected = 100 * np.mean(1 / (1 + np.exp(-(t_diff * difficulty + t_model))))
    assert res.win_rate == pytest.approx(expected, abs=3)
