"""Generation engine selection (vLLM when installed, HF otherwise) and the resumable answer store."""

from __future__ import annotations

import sys
import types

import pytest

from evals import generation
from evals.generation import AnswerStore, HFEngine, VLLMEngine, select_engine


def test_engine_selection_without_vllm(monkeypatch):
    monkeypatch.setattr(generation, "vllm_available", lambda: False)
    assert isinstance(select_engine(None), HFEngine) and isinstance(select_engine(False), HFEngine)
    with pytest.raises(RuntimeError, match="vllm is not installed"):
        select_engine(True)


def test_engine_selection_with_vllm_and_its_call(monkeypatch, tmp_path):
    monkeypatch.setattr(generation, "vllm_available", lambda: True)
    assert isinstance(select_engine(None), VLLMEngine) and isinstance(select_engine(False), HFEngine)
    calls = {}

    class LLM:
        def __init__(self, model, seed):
            calls["dir"] = model

        def chat(self, conversations, params, use_tqdm):
            calls["params"] = params
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"out{i}")]) for i in range(len(conversations))]

    fake = types.ModuleType("vllm")
    fake.LLM = LLM
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)

    class Saveable:
        def save_pretrained(self, d):
            (tmp_path / "saved").write_text(d)

    out = VLLMEngine(template_system=True).generate(Saveable(), Saveable(), [[{"role": "user", "content": "hi"}]] * 2, 7, 0.7, 4, 3)
    assert out == ["out0", "out1"] and calls["params"] == {"temperature": 0.7, "max_tokens": 7, "seed": 3}
    assert calls["dir"] == (tmp_path / "saved").read_text()  # the in-memory weights were exported first


def test_answer_store_ignores_torn_line(tmp_path):
    store = AnswerStore(tmp_path / "a.jsonl", id_key="index")
    store.add([{"index": 0, "turns": ["x"]}])
    with open(tmp_path / "a.jsonl", "a") as f:
        f.write('{"index": 1, "tur')
    again = AnswerStore(tmp_path / "a.jsonl", id_key="index")
    assert 0 in again and 1 not in again


def test_hf_generation_is_greedy_and_deterministic():
    from lit_align.models import TinyModel

    src = TinyModel(hidden_size=32, num_layers=1, num_heads=2)
    model, tok = src.load_model(), src.load_tokenizer()
    convs = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "a longer prompt here"}]]
    a = HFEngine().generate(model, tok, convs, 5, 0.0, 2, 0)
    b = HFEngine().generate(model, tok, convs[::-1], 5, 0.0, 1, 0)
    assert a == b[::-1]  # left padding: batching does not change greedy outputs
