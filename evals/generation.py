"""Generation engines and the multi-turn answering of generation tasks.

HF ``generate`` on the in-memory model by default (``evals.sampling``), vLLM's offline engine when
installed; multi-turn answers (MT-Bench protocol, Zheng et al. 2023: turn 2 sees the model's own turn-1
answer) are stored in a resumable jsonl bound to the model's identity (``evals.answers``).
"""

from __future__ import annotations

import zlib
from typing import Any, Callable

from evals.answers import AnswerStore, item_inputs, model_identity
from evals.base import EvalError, EvalTask
from evals.sampling import generate, render_prompt, without_template_system

__all__ = ["AnswerStore", "GenerationTask", "HFEngine", "VLLMEngine", "generate", "generate_multi_turn", "render_prompt",
           "select_engine"]


class HFEngine:
    """Generation with Hugging Face ``generate`` on the in-memory model (always available)."""

    name = "hf"

    def __init__(self, template_system: bool = False) -> None:
        self.template_system = template_system

    def generate(self, model, tokenizer, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                 temperature: float, batch_size: int, seed: int) -> list[str]:
        return generate(model, tokenizer, conversations, max_new_tokens, temperature, batch_size, seed, self.template_system)


class VLLMEngine:
    """vLLM's offline engine (``pip install lit-align[vllm]``).

    vLLM loads weights from a directory, not from a module, so the in-memory model (possibly just
    trained) is exported to a temporary folder first: what is scored is what is in memory.
    """

    name = "vllm"

    def __init__(self, template_system: bool = False) -> None:
        self.template_system = template_system
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

        if not self.template_system:
            conversations = [without_template_system(tokenizer, c) for c in conversations]
        params = SamplingParams(temperature=temperature, max_tokens=max_new_tokens, seed=seed)
        outputs = self._engine(model, tokenizer).chat(conversations, params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def select_engine(use_vllm: bool | None = None, template_system: bool = False) -> HFEngine | VLLMEngine:
    """``None``: vLLM when it is installed, HF otherwise; ``True`` insists on vLLM; ``False`` HF.

    ``template_system``: keep the default system prompt a chat template inserts (else an empty one is sent).
    """
    if use_vllm is None:
        use_vllm = vllm_available()
    elif use_vllm and not vllm_available():
        raise RuntimeError("use_vllm=True but vllm is not installed (pip install 'lit-align[vllm]')")
    return VLLMEngine(template_system) if use_vllm else HFEngine(template_system)


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
    store.check_inputs(items)
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
                {store.id_key: it["id"], "turns": ans, "temperature": temperature, "inputs": item_inputs(it),
                 **(extra(it) if extra else {})}
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
        system_prompt: str | None = None,
        template_system: bool = False,
    ) -> None:
        """
        Args:
            max_new_tokens: Generation budget per answer (per turn in multi-turn tasks).
            batch_size: Conversations generated together.
            seed: Sampling seed (per chunk of items, so a resumed run samples what an uninterrupted one would);
                AlpacaEval also seeds its position swap with it.
            limit: Only the first N items (instructions, questions).
            use_vllm: None: vLLM's offline engine when installed, else HF generate; True/False to force.
            system_prompt: A system turn put before every conversation; None: none.
            template_system: Without ``system_prompt``, keep the default system prompt some chat templates insert
                (SmolLM2's "You are a helpful AI assistant named SmolLM ..."); False sends an empty system turn.
        """
        for name, value, least in (("max_new_tokens", max_new_tokens, 1), ("batch_size", batch_size, 1), ("limit", limit, 0)):
            if value is not None and not (isinstance(value, int) and value >= least):  # else it fails deep in generate
                raise EvalError(f"{type(self).__name__}: {name} must be a whole number >= {least}, got {value!r}")
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.seed = seed
        self.limit = limit
        self.use_vllm = use_vllm
        self.system_prompt = system_prompt
        self.template_system = template_system

    def identity(self, model, tokenizer, engine: str | None = None) -> str:
        """The identity saved answers are keyed by: the weights, the chat template and these generation settings."""
        engine = engine or select_engine(self.use_vllm).name
        settings = {"max_new_tokens": self.max_new_tokens, "seed": self.seed, "engine": engine,
                    "system_prompt": self.system_prompt, "template_system": self.template_system}
        return model_identity(model, tokenizer, settings)

    def answer(
        self,
        model,
        tokenizer,
        items: list[dict[str, Any]],
        store: AnswerStore,
        extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> dict[Any, list[str]]:
        """``generate_multi_turn`` with this task's settings: ``{id: [answer per turn]}``.

        The store is bound to the model's identity first (weights, chat template, these settings): answers
        another model wrote into the same folder are refused, never scored as this one's.
        """
        engine = select_engine(self.use_vllm, self.template_system)
        store.bind(self.identity(model, tokenizer, engine.name))
        return generate_multi_turn(model, tokenizer, items, store, engine, self.max_new_tokens, self.batch_size, self.seed,
                                   system_prompt=self.system_prompt, extra=extra)
