"""``python -m lit_align.reference_columns``: reference columns from any model, any tokenizer.

Two checks against independent computations: (1) columns from the policy's own start make
DatasetColumnReference equal the frozen reference, so step 0 gives rewards 0 and DPO loss ln 2;
(2) with a model of ANOTHER tokenizer (a word-level vocabulary trained here, so the same text is
cut into other tokens), each column equals the sum of log_softmax(model(ids).logits) over that
model's completion tokens, computed directly from the model's full logits.
"""

from __future__ import annotations

import math

import torch

from lit_align.data.datamodule import PreferenceDataModule
from lit_align.data.sources import read_jsonl
from lit_align.losses import DPO
from lit_align.models import PretrainedModel, save_tiny
from lit_align.module import PreferenceModule
from lit_align.reference import DatasetColumnReference
from lit_align.reference_columns import main
from tests.conftest import quiet_trainer

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=128)


def word_level_model(directory, texts):
    """A tiny Llama with a word-level tokenizer (digits and words are single tokens) and ChatML."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from lit_align.models.tiny_tokenizer import CHAT_TEMPLATE

    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<unk>", "<|im_end|>", "<|pad|>", "<|im_start|>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|pad|>",
                                        unk_token="<unk>", additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_columns_from_the_policy_start_equal_the_frozen_reference(tmp_path, sort_task):
    start = save_tiny(tmp_path / "start", **TINY)
    out = main(["--model", str(start), "--data", str(sort_task["train"]), "--out", str(tmp_path / "ref.jsonl"),
                "--no-chat-template", "--max-length", "64", "--max-prompt-length", "32"])
    rows = read_jsonl(out)
    assert len(rows) == 64 and all(r["ref_chosen_logps"] < 0 and r["ref_rejected_logps"] < 0 for r in rows)
    module = PreferenceModule(model=PretrainedModel(str(start)), loss=DPO(beta=0.1), reference=DatasetColumnReference())
    dm = PreferenceDataModule(train_path=str(out), val_path=str(out), batch_size=8, max_length=64, max_prompt_length=32,
                              chat_template=False, limit=16, allow_val_in_train=True)  # validate on the same pairs, on purpose
    metrics = quiet_trainer().validate(module, datamodule=dm, verbose=False)[0]
    assert abs(metrics["val/rewards/margins"]) < 1e-5 and abs(metrics["val/rewards/chosen"]) < 1e-5
    assert abs(metrics["val/loss"] - math.log(2)) < 1e-6


def test_columns_from_a_model_with_another_tokenizer(tmp_path, sort_task):
    rows = read_jsonl(sort_task["val"])
    words = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in rows] + ["sort: 0 1 2 3 4 5 6 7 8 9"]
    other = word_level_model(tmp_path / "other", words)
    out = main(["--model", str(other), "--data", str(sort_task["val"]), "--out", str(tmp_path / "ref.jsonl")])
    scored = read_jsonl(out)
    assert len(scored) == len(rows)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(other).eval(), AutoTokenizer.from_pretrained(other)
    for row in scored[:4]:
        prompt = tok.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        for key in ("chosen", "rejected"):
            c_ids = tok(row[key], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            assert len(c_ids) == len(row[key].split()) + 1  # one token per number: not the policy's byte tokens
            ids = torch.tensor([p_ids + c_ids])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            expected = sum(float(logp[len(p_ids) - 1 + i, t]) for i, t in enumerate(c_ids))
            assert abs(row[f"ref_{key}_logps"] - expected) < 1e-4, key
