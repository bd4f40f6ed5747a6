"""Batched greedy / sampled generation through the tokenizer's chat template, k samples sharing one prompt pass.

Two costs are cut here. The prompt of a conversation asked for ``k`` samples is computed once: its
keys and values (all but its last token) go through the model once per prompt, the cache is
repeated ``k`` times, and ``generate`` starts from it (HF's ``num_return_sequences`` instead repeats the
prompt ``k`` times before the first forward pass). And no system prompt is sent that nobody asked
for: chat templates such as SmolLM2's or Qwen2's insert a default one ("You are a helpful AI assistant
named SmolLM ...", about 20 tokens of a 45-token prompt) when the conversation has none; unless
``template_system`` is set, that default is replaced by an empty system turn.
"""

from __future__ import annotations

import inspect

import torch


def injected_system_prompt(tokenizer, messages: list[dict[str, str]]) -> str | None:
    """The default system prompt the chat template inserts into ``messages`` (which have none), or None.

    Found by rendering with an explicit empty system turn: a template that injects a default renders
    the conversation as that output with the default's text between the empty turn's two halves.
    """
    if not messages or messages[0]["role"] == "system":
        return None
    plain = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    try:
        empty = tokenizer.apply_chat_template([{"role": "system", "content": ""}, *messages], tokenize=False,
                                              add_generation_prompt=True)
        marked = tokenizer.apply_chat_template([{"role": "system", "content": "\x00"}, *messages], tokenize=False,
                                               add_generation_prompt=True)
    except Exception:  # a template without a system role cannot inject one
        return None
    if "\x00" not in marked:
        return None
    head, tail = marked.split("\x00", 1)
    if empty != head + tail or len(plain) <= len(empty) or not (plain.startswith(head) and plain.endswith(tail)):
        return None
    return plain[len(head): len(plain) - len(tail)]


def without_template_system(tokenizer, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """``messages``, led by an empty system turn when the template would otherwise insert its default one."""
    if injected_system_prompt(tokenizer, messages):
        return [{"role": "system", "content": ""}, *messages]
    return messages


def render_prompt(tokenizer, messages: list[dict[str, str]], template_system: bool = False) -> str:
    """The chat-template text that asks the model for its next assistant turn.

    Args:
        tokenizer: A tokenizer with a chat template.
        messages: The conversation ({"role", "content"} dicts).
        template_system: Keep a default system prompt the template inserts when ``messages`` have none;
            False (default) renders an empty system turn instead, so only what the caller wrote is sent.
    """
    if not template_system:
        messages = without_template_system(tokenizer, messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def generate_shared(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_samples: int,
                    **generate_kwargs) -> torch.Tensor:
    """``model.generate`` with ``num_samples`` rows per prompt (prompt ``i``'s samples are rows ``i*k .. i*k+k-1``),
    each prompt's forward pass done once: the cache of all but its last token is computed for ``b`` rows
    and repeated, instead of the ``b * k`` rows ``num_return_sequences`` runs. Returns the sequences
    (prompt included) as ``generate`` does.
    """
    k = num_samples
    if k == 1 or input_ids.shape[1] < 2:
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, num_return_sequences=k, **generate_kwargs)
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    # transformers >= 5.2x calls the argument ``cache`` (``past_key_values`` is deprecated there), older ones not
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    # positions as generate derives them from the mask (left padding), so the cache equals its own
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1], position_ids=positions[:, :-1],
          use_cache=True, **{name: cache})
    cache.batch_repeat_interleave(k)
    return model.generate(input_ids=input_ids.repeat_interleave(k, dim=0),
                          attention_mask=attention_mask.repeat_interleave(k, dim=0), **{name: cache}, **generate_kwargs)


@torch.no_grad()
def sample(
    model,
    tokenizer,
    conversations: list[list[dict[str, str]]],
    num_samples: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    batch_size: int = 16,
    seed: int = 0,
    template_system: bool = False,
    share_prompt: bool = True,
) -> list[list[str]]:
    """``num_samples`` completions per conversation (temperature 0: greedy); prompts left-padded, ``batch_size``
    conversations at a time, each prompt computed once for its samples (``share_prompt``; False: HF's
    ``num_return_sequences``, which recomputes it per sample, kept for the benchmark). The torch RNG is
    seeded with ``seed`` and restored afterwards.
    """
    device = next(model.parameters()).device
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[list[str]] = []
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for start in range(0, len(conversations), batch_size):
            texts = [render_prompt(tokenizer, conv, template_system) for conv in conversations[start: start + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id,
                          **({"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}))
            if share_prompt:
                out = generate_shared(model, enc["input_ids"], enc["attention_mask"], num_samples, **kwargs)
            else:
                out = model.generate(**enc, num_return_sequences=num_samples, **kwargs)
            texts_out = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            outputs.extend(texts_out[i: i + num_samples] for i in range(0, len(texts_out), num_samples))
    finally:
        tokenizer.padding_side = padding_side
        torch.random.set_rng_state(generator_state)
    return outputs


def generate(
    model,
    tokenizer,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    batch_size: int = 16,
    seed: int = 0,
    template_system: bool = False,
) -> list[str]:
    """One completion per conversation; temperature 0 is greedy (``sample`` with one sample each)."""
    return [s[0] for s in sample(model, tokenizer, conversations, 1, max_new_tokens, temperature, batch_size, seed,
                                 template_system)]
