"""Batched greedy / sampled generation through the tokenizer's chat template (HF ``generate``)."""

from __future__ import annotations

import torch


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
