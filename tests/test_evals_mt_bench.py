"""MT-Bench: generation protocol, judge prompts, parsing, scoring and full runs against a local judge."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

from tests.evals_support.fake_openai import FakeOpenAIServer

from evals import run_suite  # noqa: E402
from evals.generation import AnswerStore, generate_multi_turn  # noqa: E402
from evals.judge import JudgeClient  # noqa: E402
from evals.judge.mt_bench_prompts import DEFAULT_PROMPTS, load_judge_prompts  # noqa: E402
from evals.judge.parsing import parse_pair_verdict, parse_rating  # noqa: E402
from evals.mt_bench import MTBench  # noqa: E402
from evals.mt_bench_data import load_questions  # noqa: E402
from lit_align.data.sources import read_jsonl  # noqa: E402
from evals.mt_bench_judging import pair_outcome, pair_scores, single_scores  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MT = DATA / "mt_bench"
KEY = "sk-test-SECRET-mtbench-5678"


@pytest.fixture(autouse=True)
def judge_key(monkeypatch):
    assert MT.is_dir(), f"shared data missing: {MT}"
    monkeypatch.setenv("FAKE_JUDGE_KEY", KEY)


@pytest.fixture(scope="module")
def tiny():
    from lit_align.models import TinyModel

    source = TinyModel(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=8192)
    return source.load_model(), source.load_tokenizer()


def _judge(url: str) -> JudgeClient:
    return JudgeClient(model="judge-x", base_url=url, api_key_env="FAKE_JUDGE_KEY", max_concurrency=8, timeout=5,
                       backoff_base=0.01, backoff_max=0.05)


def test_rating_and_verdict_parsing():
    assert parse_rating("blah Rating: [[7]]") == 7.0
    assert parse_rating("Rating: [[8.5]]") == 8.5 and parse_rating("Rating: [[8.5]] and [[3]]") is None  # ambiguous
    assert parse_rating("Rating: [6]") == 6.0  # FastChat's fallback pattern
    assert parse_rating("Rating: 6/10") is None and parse_rating(None) is None
    assert parse_pair_verdict("so [[B]]") == "B" and parse_pair_verdict("[[C]]") == "tie"
    assert parse_pair_verdict("A is better") is None


def test_pair_rules_by_hand():
    assert pair_outcome("A", "B") == ("win", False)  # model was A then B: wins both orders
    assert pair_outcome("B", "A") == ("loss", False)
    assert pair_outcome("A", "A") == ("tie", True)  # position bias: inconsistent -> tie
    assert pair_outcome("tie", "tie") == ("tie", False)
    assert pair_outcome("A", None) == (None, False)
    rows = [{"outcome": o, "turn": 1, "category": "c", "error": False, "inconsistent": False}
            for o in ["win", "win", "loss", "tie", None]]
    m = pair_scores(rows)
    assert m["win_rate_adjusted"] == pytest.approx((2 + 0.5) / 4) and m["parse_failures"] == 1


def test_single_scores_by_hand():
    rows = [{"turn": 1, "category": "a", "rating": 2.0, "error": None}, {"turn": 2, "category": "a", "rating": 4.0, "error": None},
            {"turn": 1, "category": "b", "rating": None, "error": None}, {"turn": 2, "category": "b", "rating": 9.0, "error": None}]
    m = single_scores(rows)
    assert (m["score"], m["score_turn1"], m["score_turn2"]) == (5.0, 2.0, 6.5)
    assert (m["category/a"], m["category/b"], m["parse_failures"]) == (3.0, 9.0, 1)


def test_default_prompts_keep_official_structure():
    official, version = load_judge_prompts(str(MT / "judge_prompts.jsonl"))
    assert version.startswith("judge_prompts.jsonl@sha256:")
    fields = lambda t: {f for _, f, _, _ in string.Formatter().parse(t) if f}  # noqa: E731
    for name, mine in DEFAULT_PROMPTS.items():
        assert fields(mine.prompt_template) == fields(official[name].prompt_template), name
        assert mine.output_format == official[name].output_format
        text = mine.system_prompt + mine.prompt_template
        tokens = ['"[[rating]]"'] if name.startswith("single") else ['"[[A]]"', '"[[B]]"', '"[[C]]"']
        assert all(t in text for t in tokens), name


def test_multi_turn_generation_sees_own_answers_and_resumes(tmp_path):
    class Recorder:
        calls = []

        def generate(self, model, tok, convs, max_new_tokens, temperature, batch_size, seed):
            self.calls.append((temperature, [list(c) for c in convs]))
            return [f"ans{len(c)}-{c[0]['content']}" for c in convs]

    items = [{"id": i, "turns": [f"q{i}a", f"q{i}b"], "temperature": t} for i, t in enumerate([0.0, 0.7, 0.0])]
    store = AnswerStore(tmp_path / "a.jsonl")
    eng = Recorder()
    out = generate_multi_turn(None, None, items[:2], store, eng, 4, 8)
    second_turn = [c for t, convs in eng.calls for c in convs if len(c) == 3]
    assert second_turn and all(c[1]["role"] == "assistant" and c[1]["content"] == f"ans1-{c[0]['content']}" for c in second_turn)
    assert {t for t, _ in eng.calls} == {0.0, 0.7}
    assert out[0] == ["ans1-q0a", "ans3-q0a"]
    eng.calls.clear()
    out = generate_multi_turn(None, None, items, AnswerStore(tmp_path / "a.jsonl"), eng, 4, 8)
    assert [c[0]["content"] for _, convs in eng.calls for c in convs] == ["q2a", "q2a"]  # only the new item
    assert len(out) == 3


def test_malformed_question_file_names_file_and_line(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question_id": 1, "category": "x", "turns": ["a"]}\n{"question_id": 2, "category": "x"}\n')
    with pytest.raises(ValueError, match=r"q.jsonl:2: field 'turns'"):
        load_questions(bad)


def _single_responder(q81: str, q82: str):
    def respond(body):
        user = body["messages"][-1]["content"]
        if "### User" in user:
            return {"content": "Second answer judged. Rating: [[8]]"}
        if q81 in user:
            return {"content": "I cannot decide."}  # malformed: excluded and counted
        if q82 in user:
            return {"content": "Rating: [6]"}  # fallback pattern
        return {"content": "Rating: [[4]]" if "[The Start of Reference Answer]" in user else "Rating: [[6]]"}
    return respond


@pytest.mark.slow
def test_full_mt_bench_80_questions_single(tiny, tmp_path):
    model, tok = tiny
    qs = load_questions(MT / "question.jsonl")
    assert len(qs) == 80
    respond = _single_responder(qs[0]["turns"][0], qs[1]["turns"][0])
    seen_429: set[str] = set()

    def fault(body, n):
        user = body["messages"][-1]["content"]
        if n == 0 and len(seen_429) < 5 and "### User" in user:
            seen_429.add(user)
            return ("status", 429)
        return None

    task = MTBench(question_file=str(MT / "question.jsonl"), reference_file=str(MT / "reference_answer" / "gpt-4.jsonl"),
                   judge=None, max_new_tokens=6, batch_size=16, seed=0, min_coverage=0.99)
    with FakeOpenAIServer(responder=respond, fault=fault) as server:
        task.judge = _judge(server.base_url)
        res = run_suite(model, tok, [task], tmp_path / "eval")
        sent_first = server.count()
        res2 = run_suite(model, tok, [task], tmp_path / "eval")  # rerun: every valid verdict cached
        assert server.count() == sent_first + 1  # only the unparseable reply is asked again
    m = res["metrics"]
    assert res["complete"] and sent_first == 160 + 5
    assert m["mt_bench/judge_retries"] == 5 and m["mt_bench/judge_failures"] == 0
    assert m["mt_bench/parse_failures"] == 1 and m["mt_bench/n_ratings"] == 159
    assert m["mt_bench/coverage"] == pytest.approx(159 / 160) and m["mt_bench/min_coverage"] == 0.99  # accepted, reported
    assert m["mt_bench/score_turn1"] == pytest.approx((30 * 4 + 49 * 6) / 79)
    assert m["mt_bench/score_turn2"] == 8.0
    assert m["mt_bench/score"] == pytest.approx((30 * 4 + 49 * 6 + 80 * 8) / 159)
    assert m["mt_bench/category/math"] == 6.0 and m["mt_bench/category/stem"] == 7.0
    assert m["mt_bench/category/writing"] == pytest.approx((9 * 6 + 10 * 8) / 19)
    same = lambda d: {k: v for k, v in d.items() if "judge_" not in k}  # noqa: E731
    assert same(res2["metrics"]) == same(m)
    assert res2["metrics"]["mt_bench/judge_cache_hits"] == 159 and res2["metrics"]["mt_bench/judge_sent"] == 1
    out = tmp_path / "eval" / "mt_bench"
    answers = read_jsonl(out / "answers.jsonl")
    assert len(answers) == 80 and all(len(a["turns"]) == 2 for a in answers)
    judgments = read_jsonl(out / "judgments.jsonl")
    assert len(judgments) == 160 and (out / "categories.png").stat().st_size > 0
    math_turn1 = next(r for r in server.log if "Reference Answer" in r["body"]["messages"][-1]["content"])
    assert math_turn1["body"]["temperature"] == 0.0 and math_turn1["body"]["max_tokens"] == 2048
    cfg = res["tasks"]["mt_bench"]["config"]
    assert cfg["prompt_version"] == "lit-align-mt-bench-v1" and cfg["judge"]["api_key_env"] == "FAKE_JUDGE_KEY"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_pairwise_with_order_swap(tiny, tmp_path):
    model, tok = tiny
    qs = load_questions(MT / "question.jsonl")[:6]
    baseline = tmp_path / "baseline.jsonl"
    baseline.write_text("".join(json.dumps({"question_id": q["question_id"], "model_id": "base",
                                            "choices": [{"index": 0, "turns": ["BASELINE one", "BASELINE two"]}]}) + "\n" for q in qs))
    q0 = qs[0]["turns"][0]

    def respond(body):
        user = body["messages"][-1]["content"]
        if q0 in user and "### User" not in user:
            return {"content": "[[A]]"}  # always the first position: inconsistent -> tie
        a_section = user.split("Assistant B")[0]
        return {"content": "[[B]]" if "BASELINE" in a_section else "[[A]]"}  # the model always wins

    task = MTBench(question_file=str(MT / "question.jsonl"), reference_file=str(MT / "reference_answer" / "gpt-4.jsonl"),
                   judge=None, mode="pairwise", baseline_answers_file=str(baseline),
                   judge_prompts_file=str(MT / "judge_prompts.jsonl"), max_new_tokens=4, limit=6)
    with FakeOpenAIServer(responder=respond) as server:
        task.judge = _judge(server.base_url)
        m = run_suite(model, tok, [task], tmp_path / "eval")["metrics"]
        assert server.count() == 6 * 2 * 2
    assert (m["mt_bench/wins"], m["mt_bench/ties"], m["mt_bench/losses"], m["mt_bench/inconsistent"]) == (11, 1, 0, 1)
    assert m["mt_bench/win_rate_adjusted"] == pytest.approx(11.5 / 12)
    assert m["mt_bench/win_rate_adjusted_turn2"] == 1.0


@pytest.mark.parametrize("setting", [{"batch_size": 0}, {"max_new_tokens": 0}, {"limit": -1}, {"batch_size": 2.5}])
def test_generation_settings_are_refused_at_construction(setting):
    """A budget or batch size below 1 (or a negative limit) is named at construction, before any generation."""
    from evals.alpaca_eval import AlpacaEval
    from evals.base import EvalError

    (name, value), = setting.items()
    judge = JudgeClient(model="judge", base_url="http://127.0.0.1:9/v1", api_key_env="NO_SUCH_KEY_VAR")
    for make in (lambda: MTBench("questions.jsonl", judge, **setting), lambda: AlpacaEval("i.jsonl", "b.json", judge, **setting)):
        with pytest.raises(EvalError, match=f"{name} must be a whole number >= \\d, got {value}"):
            make()
