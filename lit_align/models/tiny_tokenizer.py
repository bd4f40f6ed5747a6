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


# --- a word-level tokenizer: another vocabulary for the same text ------------------------------
# The sort task's words (benchmarks/demos/sort_task.py: "sort: 3 1 2" -> "1 2 3") and the chat roles,
# one token each: a model with it cuts the same text into other tokens than the byte tokenizer does
# (a "reference with another tokenizer", Liu et al. 2024 RQ3). Built in code, no training, no download.
WORD_SPECIAL_TOKENS = ["<|im_end|>", "<|pad|>", "<|im_start|>", "<unk>"]
WORDS = ["system", "user", "assistant", "sort:"] + [str(d) for d in range(10)]


def build_word_tokenizer(words: list[str] | None = None):
    """Whitespace-split words, each its own id (unknown words -> ``<unk>``), with the same ChatML template.

    Decoding joins words with single spaces, so the sort task's answers round-trip exactly; other
    whitespace (the template's newlines) is not kept, which a verifier of space-separated numbers never sees.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(dict.fromkeys(WORD_SPECIAL_TOKENS + list(words or WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


TOKENIZERS = {"byte": build_tokenizer, "word": build_word_tokenizer}
