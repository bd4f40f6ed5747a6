"""Batched greedy / sampled generation through the tokenizer's chat template.

HF ``generate`` on the in-memory model by default, vLLM's offline engine when installed; multi-turn
answers (MT-Bench protocol, Zheng et al. 2023: turn 2 sees the model's own turn-1 answer) are stored
in a resumable jsonl.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Callable

import torch

from evals.base import EvalError, EvalTask


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The chat-template text that asks the model for its next assistant turn."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    batch_size: int = 16,
    seed: int = 0,
) -> list[str]:
    """One completion per conversation; temperature 0 is greedy. Prompts are left-padded."""
    device = next(model.parameters()).device
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for start in range(0, len(conversations), batch_size):
            texts = [render_prompt(tokenizer, conv) for conv in conversations[start : start + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            new_tokens = out[:, enc["input_ids"].shape[1] :]  # (b, <=max_new_tokens)
            outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
        torch.random.set_rng_state(generator_state)
    return outputs


class AnswerStore:
    """Append-only, fsynced jsonl of generated answers keyed by ``id``, so generation resumes.

    A kill mid-generation loses at most the batch being generated; a torn last line is ignored.
    """

    def __init__(self, path: str | os.PathLike, id_key: str = "question_id") -> None:
        self.path = Path(path)
        """The jsonl file."""
        self.id_key = id_key
        """Field that identifies a row."""
        self.rows: dict[Any, dict[str, Any]] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # torn final line: regenerated
                    self.rows[row[id_key]] = row

    def __contains__(self, item_id: Any) -> bool:
        return item_id in self.rows

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                self.rows[row[self.id_key]] = row
            f.flush()
            os.fsync(f.fileno())


class HFEngine:
    """Generation with Hugging Face ``generate`` on the in-memory model (always available)."""

    def generate(self, model, tokenizer, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                 temperature: float, batch_size: int, seed: int) -> list[str]:
        return generate(model, tokenizer, conversations, max_new_tokens, temperature, batch_size, seed)


class VLLMEngine:
    """vLLM's offline engine (``pip install lit-align[vllm]``).

    vLLM loads weights from a directory, not from a module, so the in-memory model (possibly just
    trained) is exported to a temporary folder first: what is scored is what is in memory.
    """

    def __init__(self) -> None:
        self._llm = None
        self._tmp = None

    def _engine(self, model, tokenizer):
        if self._llm is None:
            import tempfile

            from vllm import LLM

            self._tmp = tempfile.TemporaryDirectory(prefix="lit_align_vllm_")
            model.save_pretrained(self._tmp.name)
            tokenizer.save_pretrained(self._tmp.name)
            self._llm = LLM(model=self._tmp.name, seed=0)
        return self._llm

    def generate(self, model, tokenizer, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                 temperature: float, batch_size: int, seed: int) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=temperature, max_tokens=max_new_tokens, seed=seed)
        outputs = self._engine(model, tokenizer).chat(conversations, params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def select_engine(use_vllm: bool | None = None) -> HFEngine | VLLMEngine:
    """``None``: vLLM when it is installed, HF otherwise; ``True`` insists on vLLM; ``False`` HF."""
    if use_vllm is None:
        use_vllm = vllm_available()
    elif use_vllm and not vllm_available():
        raise RuntimeError("use_vllm=True but vllm is not installed (pip install 'lit-align[vllm]')")
    return VLLMEngine() if use_vllm else HFEngine()


def generate_multi_turn(
    model,
    tokenizer,
    items: list[dict[str, Any]],
    store: AnswerStore,
    engine: HFEngine | VLLMEngine,
    max_new_tokens: int,
    batch_size: int,
    seed: int = 0,
    system_prompt: str | None = None,
    extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[Any, list[str]]:
    """Answer every turn of every item; turn k+1 sees the model's own answers to turns 1..k.

    ``items`` are ``{"id", "turns": [str, ...], "temperature": float}``. Items already in ``store``
    are skipped (resume); the others are answered in chunks of ``batch_size`` items of one
    temperature, each chunk written to the store when all its turns are done. Each chunk is seeded
    from ``seed`` and its first id, so a resumed run samples what an uninterrupted one would have.
    """
    todo = [it for it in items if it["id"] not in store]
    by_temperature: dict[float, list[dict[str, Any]]] = {}
    for it in todo:
        by_temperature.setdefault(float(it["temperature"]), []).append(it)
    for temperature, group in by_temperature.items():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            chunk_seed = seed + zlib.crc32(str(chunk[0]["id"]).encode())
            histories = [[{"role": "system", "content": system_prompt}] if system_prompt else [] for _ in chunk]
            answers: list[list[str]] = [[] for _ in chunk]
            for turn in range(max(len(it["turns"]) for it in chunk)):
                active = [i for i, it in enumerate(chunk) if turn < len(it["turns"])]
                for i in active:
                    histories[i].append({"role": "user", "content": chunk[i]["turns"][turn]})
                outs = engine.generate(model, tokenizer, [histories[i] for i in active], max_new_tokens,
                                       temperature, batch_size, chunk_seed + turn)
                for i, out in zip(active, outs):
                    histories[i].append({"role": "assistant", "content": out})
                    answers[i].append(out)
            store.add([
                {store.id_key: it["id"], "turns": ans, "temperature": temperature, **(extra(it) if extra else {})}
                for it, ans in zip(chunk, answers)
            ])
    return {it["id"]: store.rows[it["id"]]["turns"] for it in items}


class GenerationTask(EvalTask):
    """A task that first has the model answer prompts through ``generate_multi_turn`` (resumable).

    Owns the generation settings every such task takes. ``max_new_tokens`` and ``batch_size`` have
    no default here: each task declares them again with its protocol's default (AlpacaEval 2048,
    MT-Bench 1024), because jsonargparse shows a ``**kwargs`` parameter with the base's default in
    ``--help`` and ``--print_config``; the others reach this ``__init__`` through ``**kwargs``.
    """

    def __init__(
        self,
        max_new_tokens: int,
        batch_size: int,
        seed: int = 0,
        limit: int | None = None,
        use_vllm: bool | None = None,
    ) -> None:
        """
        Args:
            max_new_tokens: Generation budget per answer (per turn in multi-turn tasks).
            batch_size: Conversations generated together.
            seed: Sampling seed (per chunk of items, so a resumed run samples what an uninterrupted one would);
                AlpacaEval also seeds its position swap with it.
            limit: Only the first N items (instructions, questions).
            use_vllm: None: vLLM's offline engine when installed, else HF generate; True/False to force.
        """
        for name, value, least in (("max_new_tokens", max_new_tokens, 1), ("batch_size", batch_size, 1), ("limit", limit, 0)):
            if value is not None and not (isinstance(value, int) and value >= least):  # else it fails deep in generate
                raise EvalError(f"{type(self).__name__}: {name} must be a whole number >= {least}, got {value!r}")
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.seed = seed
        self.limit = limit
        self.use_vllm = use_vllm

    def answer(
        self,
        model,
        tokenizer,
        items: list[dict[str, Any]],
        store: AnswerStore,
        extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> dict[Any, list[str]]:
        """``generate_multi_turn`` with this task's settings: ``{id: [answer per turn]}``."""
        return generate_multi_turn(model, tokenizer, items, store, select_engine(self.use_vllm), self.max_new_tokens,
                                   self.batch_size, self.seed, extra=extra)
