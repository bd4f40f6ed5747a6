"""A saved answer is reused only for the inputs it was generated from: the prompt's turns and its temperature.

The store's identity covers the weights and the task-wide generation settings; an item's own inputs
(another question file under the same ids, a per-category temperature override, AlpacaEval's
temperature) used to be left out, and the old answers were judged as answers to the new inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.evals_support.fake_openai import FakeOpenAIServer
from tests.test_evals_cli_evaluate import MT, _config, _errors, _mt_task

import cli  # noqa: F401  (imported before capsys: Lightning binds its log handler at import)


def _question_file(tmp_path: Path, first_turn: str | None) -> str:
    rows = [json.loads(line) for line in (MT / "question.jsonl").read_text().splitlines()[:1]]
    if first_turn is not None:
        rows[0]["turns"][0] = first_turn
    path = tmp_path / f"questions_{first_turn is not None}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


CHANGES = {  # what changes between the two runs into the same output folder: the second must be refused
    "another question under the same id": lambda t, tmp: t["init_args"].update(question_file=_question_file(tmp, "Write a haiku.")),
    "a per-category temperature override": lambda t, tmp: t["init_args"].update(temperatures={"writing": 0.3}),
}


def _run(tmp_path: Path, out: Path, task: dict) -> int:
    return cli.run(["evaluate", "--config", str(_config(tmp_path, 0, [task])), "--output_dir", str(out)])


@pytest.mark.parametrize("change", list(CHANGES))
def test_answers_to_other_inputs_are_refused_not_judged(tmp_path, capsys, monkeypatch, change):
    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test-inputs")
    out = tmp_path / "eval"
    with FakeOpenAIServer(responder=lambda body: {"content": "Rating: [[7]]"}) as server:
        task = _mt_task(server.base_url, 3)
        task["init_args"]["question_file"] = _question_file(tmp_path, None)
        assert _run(tmp_path, out, task) == 0, capsys.readouterr().err[-2000:]
        answers = (out / "mt_bench" / "answers.jsonl").read_text()
        assert _run(tmp_path, out, task) == 0  # the same inputs: reused
        capsys.readouterr()
        sent = server.count()
        CHANGES[change](task, tmp_path)
        assert _run(tmp_path, out, task) == 1
        lines = _errors(capsys.readouterr().err)
        assert len(lines) == 1 and "answers generated from other prompts or temperatures (question_id 81)" in lines[0], lines
        assert server.count() == sent  # nothing judged
    assert (out / "mt_bench" / "answers.jsonl").read_text() == answers
