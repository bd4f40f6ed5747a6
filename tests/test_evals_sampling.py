"""k samples per prompt share the prompt's forward pass; no system prompt the caller did not ask for; the
verifier's strict and extracted accuracy (issue 18 points 7 and 8, issue 20 point 3)."""

from __future__ import annotations

import pytest
import torch

from evals.sampling import generate, injected_system_prompt, render_prompt, sample
from evals.verifier import VerifierTask, extract_answer, same_answer

# SmolLM2-135M-Instruct's template (as in its GGUF / tokenizer_config): a default system turn when there is none
SMOL_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
                 "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def tiny():
    from lit_align.models import TinyModel

    source = TinyModel(hidden_size=32, num_layers=2, num_heads=2)
    return source.load_model().eval(), source.load_tokenizer()


CONVS = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "a much longer prompt than that one"}],
         [{"role": "user", "content": "sort 3 1 2"}]]


def test_shared_prompt_greedy_samples_equal_plain_generation(tiny):
    model, tok = tiny
    plain = generate(model, tok, CONVS, max_new_tokens=6, batch_size=3)
    shared = sample(model, tok, CONVS, num_samples=3, max_new_tokens=6, batch_size=3)
    assert shared == [[p] * 3 for p in plain]  # left padding and the repeated cache change nothing


def test_shared_prompt_samples_match_num_return_sequences(tiny):
    model, tok = tiny
    shared = sample(model, tok, CONVS, num_samples=4, max_new_tokens=6, temperature=1.0, batch_size=3, seed=5)
    naive = sample(model, tok, CONVS, num_samples=4, max_new_tokens=6, temperature=1.0, batch_size=3, seed=5,
                   share_prompt=False)
    assert shared == naive  # same logits, same random stream: the same samples
    assert any(len(set(s)) > 1 for s in shared)  # and they are samples, not copies


def test_the_prompt_is_computed_once_for_k_samples(tiny):
    model, tok = tiny
    seen: list[int] = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    try:
        enc = tok([render_prompt(tok, c) for c in CONVS], return_tensors="pt", padding=True, add_special_tokens=False)
        b, length = enc["input_ids"].shape
        k, new = 4, 3
        for share in (True, False):
            seen.clear()
            sample(model, tok, CONVS, num_samples=k, max_new_tokens=new, temperature=1.0, batch_size=3, share_prompt=share)
            if share:  # prompt minus its last token once per prompt, then b * k rows of one token per step
                assert seen[0] == b * (length - 1) and sum(seen) == b * (length - 1) + b * k * new
            else:  # num_return_sequences: the whole prompt for each of the b * k rows
                assert seen[0] == b * k * length
    finally:
        hook.remove()


def test_no_default_system_prompt_unless_asked(tokenizer):
    tok = tokenizer
    original = tok.chat_template
    try:
        tok.chat_template = SMOL_TEMPLATE
        msgs = [{"role": "user", "content": "2 + 3?"}]
        assert injected_system_prompt(tok, msgs) == DEFAULT
        text = render_prompt(tok, msgs)
        assert DEFAULT not in text and text == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n2 + 3?<|im_end|>\n<|im_start|>assistant\n"
        assert DEFAULT in render_prompt(tok, msgs, template_system=True)
        own = [{"role": "system", "content": "Be brief."}, *msgs]
        assert render_prompt(tok, own) == render_prompt(tok, own, template_system=True)  # the caller's own is kept
        tok.chat_template = original  # a template that inserts nothing renders exactly as before
        assert injected_system_prompt(tok, msgs) is None
        assert render_prompt(tok, msgs) == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    finally:
        tok.chat_template = original


@pytest.mark.parametrize("output, how, expected", [
    ("2 + 3 = 5", "last_number", "5"),
    ("The answer is 1,000.", "last_number", "1,000"),
    ("no digits", "last_number", None),
    ("Let me think.\nAnswer: 42", "answer_line", "42"),
    ("answer is: blue", "answer_line", "blue"),
    ("just 7", "answer_line", "just 7"),
    ("x=3; y=4", "regex", "4"),
    ("nothing", "regex", None),
    ("  5 ", "none", "  5 "),
])
def test_extraction(output, how, expected):
    assert extract_answer(output, how, pattern=r"y=(\d+)" if how == "regex" else None) == expected


@pytest.mark.parametrize("extracted, gold, same", [
    ("1,000", "1000", True), ("2.50", "2.5", True), ("-0", "0", True), ("5.", "5", True), ("6", "5", False),
    ("1 2 3", "1 2 3", True), ("1  2 3", "1 2 3", True), (None, "5", False), ("1234567.5", "1234568.1", False),
])
def test_answers_compare_as_numbers_or_text(extracted, gold, same):
    assert same_answer(extracted, gold) is same


def test_verifier_reports_strict_and_extracted_accuracy_side_by_side(tiny, tmp_path, monkeypatch):
    import json

    from evals import verifier

    rows = [("2 + 3?", "5", "2 + 3 = 5"), ("4 + 4?", "8", "8"), ("1 + 1?", "2", "1 + 1 = 3"), ("9 - 2?", "7", "seven")]
    data = tmp_path / "v.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a, _ in rows))
    monkeypatch.setattr(verifier, "generate", lambda *a, **k: [o for _, _, o in rows])
    metrics = VerifierTask(str(data), extract="last_number").run(*tiny, tmp_path / "out")
    assert (metrics["accuracy"], metrics["extracted_accuracy"], metrics["n"]) == (0.25, 0.5, 4)
    saved = [json.loads(x) for x in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert [r["extracted"] for r in saved] == ["5", "8", "3", None]


@pytest.mark.parametrize("kwargs, message", [({"extract": "regex"}, "needs a pattern"),
                                             ({"extract": "regex", "pattern": "(["}, "not a regular expression"),
                                             ({"extract": "first_word"}, "extract must be")])
def test_bad_extraction_settings_are_refused(kwargs, message):
    from evals.base import EvalError

    with pytest.raises(EvalError, match=message):
        VerifierTask("x.jsonl", **kwargs)


def test_sampling_benchmark_runs_and_reports_its_command(tmp_path):
    from benchmarks.sampling_share import main

    out = tmp_path / "share.json"
    result = main(["--tiny", "--prompts", "2", "--samples", "3", "--new_tokens", "2", "--rounds", "1", "--out", str(out)])
    assert result["command"].startswith("python -m benchmarks.sampling_share --tiny")
    assert set(result["cpu_s_per_sample"]) == {"shared_prompt", "shared_prompt_template_system", "repeated_prompt",
                                               "repeated_prompt_template_system"}
    assert result["speedup_shared_prompt"] > 0 and out.is_file()
