"""A byte-level tokenizer with a ChatML chat template, built in code (no download).

Ids 0-255 are the 256 byte symbols of GPT-2's byte-to-unicode alphabet; the special tokens follow.
Every string round-trips exactly, which keeps verifier tasks honest.
"""

from __future__ import annotations

SPECIAL_TOKENS = ["<|im_end|>", "<|pad|>", "<|im_start|>"]
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def special_ids() -> dict[str, int]:
    return {"eos": 256, "pad": 257, "im_start": 258}


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    assert len(tokenizer) == VOCAB_SIZE and tokenizer.eos_token_id == special_ids()["eos"]
    return tokenizer
