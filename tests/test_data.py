"""Data: the three formats, length budgets, and one clear line for every kind of bad row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit_align.data import DataError, PreferenceDataModule
from lit_align.data.sources import read_jsonl


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def loaded(tmp_path, rows, tokenizer, name="data.jsonl", **kwargs) -> PreferenceDataModule:
    dm = PreferenceDataModule(train_path=write_jsonl(tmp_path / name, rows), **kwargs)
    dm._tokenizer = lambda: tokenizer
    dm.setup("fit")
    return dm


def texts(tokenizer, pair):
    return (tokenizer.decode(pair.prompt_ids), tokenizer.decode(pair.chosen_ids), tokenizer.decode(pair.rejected_ids))


def test_explicit_prompt_with_chat_template(tmp_path, tokenizer):
    dm = loaded(tmp_path, [{"prompt": "sort: 3 1", "chosen": "1 3", "rejected": "3 1"}], tokenizer)
    prompt, chosen, rejected = texts(tokenizer, dm.train_set[0])
    assert prompt == "<|im_start|>user\nsort: 3 1<|im_end|>\n<|im_start|>assistant\n"
    assert chosen == "1 3<|im_end|>" and rejected == "3 1<|im_end|>"  # EOS appended once


def test_explicit_prompt_raw_text(tmp_path, tokenizer):
    dm = loaded(tmp_path, [{"prompt": "Q: 2+2? A:", "chosen": " 4", "rejected": " 5"}], tokenizer, chat_template=False)
    assert texts(tokenizer, dm.train_set[0]) == ("Q: 2+2? A:", " 4<|im_end|>", " 5<|im_end|>")


def test_conversational_format(tmp_path, tokenizer):
    row = {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    prompt, chosen, rejected = texts(tokenizer, loaded(tmp_path, [row], tokenizer).train_set[0])
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert (chosen, rejected) == ("Hello!<|im_end|>", "Go away.<|im_end|>")


def test_hh_rlhf_implicit_prompt_split(tmp_path, tokenizer, shared_data):
    """Real HH-RLHF rows: the prompt runs to the last shared '\\n\\nAssistant:', the rest is the answer."""
    source = shared_data / "hh_rlhf" / "harmless-base_test.jsonl"
    rows = read_jsonl(source)[:5]
    dm = PreferenceDataModule(train_path=str(source), limit=5, max_length=4096, max_prompt_length=4096)
    dm._tokenizer = lambda: tokenizer
    dm.setup("fit")
    assert len(dm.train_set) == 5
    for row, pair in zip(rows, dm.train_set.pairs):
        prompt, chosen, rejected = texts(tokenizer, pair)
        assert prompt.endswith("\n\nAssistant:") and prompt.startswith("\n\nHuman:")
        assert row["chosen"] == prompt + chosen.removesuffix("<|im_end|>")
        assert row["rejected"] == prompt + rejected.removesuffix("<|im_end|>")
        assert "\n\nAssistant:" not in chosen  # nothing of the dialogue leaks into the completion
    first = texts(tokenizer, dm.train_set[0])
    assert first[0].endswith("Human: okay some of these do not have anything to do with pens\n\nAssistant:")
    assert first[1].startswith(" No, sorry!  All of these involve a pen")


def test_whole_hh_rlhf_file_loads(tokenizer, shared_data):
    dm = PreferenceDataModule(train_path=str(shared_data / "hh_rlhf" / "harmless-base_test.jsonl"), on_bad_row="skip")
    dm._tokenizer = lambda: tokenizer
    dm.setup("fit")
    counts = dm.counts["train"]
    assert counts["rows"] == 2312 and counts["pairs"] + counts["bad_rows_skipped"] + counts["dropped_after_truncation"] == 2312
    assert counts["pairs"] > 2200


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "a", "chosen": "b"', "data.jsonl:2: invalid JSON"),
        ({"prompt": "a", "chosen": "b"}, "data.jsonl:2: missing field 'rejected'"),
        ({"prompt": "a", "chosen": 3, "rejected": "c"}, "data.jsonl:2: field 'chosen' must be a string, got int"),
        ({"prompt": "a", "chosen": "  ", "rejected": "c"}, "data.jsonl:2: field 'chosen' is an empty completion"),
        ({"prompt": "a", "chosen": "b", "rejected": "b"}, "data.jsonl:2: field 'rejected' is identical to 'chosen'"),
        ({"prompt": [{"role": "user"}], "chosen": [], "rejected": []}, "data.jsonl:2: field 'prompt' message 0"),
        ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "totally different"}, "data.jsonl:2: field 'chosen': chosen and rejected share no prefix"),
        ([1, 2], "data.jsonl:2: row must be a JSON object"),
        ({"prompt": "a", "chosen": "b", "rejected": "c", "score_chosen": 1.0}, "data.jsonl:2: missing field 'score_rejected'"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, tokenizer, line, message):
    good = {"prompt": "x", "chosen": "y", "rejected": "z"}
    with pytest.raises(DataError) as err:
        loaded(tmp_path, [good, line], tokenizer)
    text = str(err.value)
    assert "\n" not in text and message in text, text


def test_bad_rows_skipped_and_counted_when_asked(tmp_path, tokenizer):
    rows = [{"prompt": "x", "chosen": "y", "rejected": "z"}, "{oops", {"prompt": "x", "chosen": "y", "rejected": "y"}]
    dm = loaded(tmp_path, rows, tokenizer, on_bad_row="skip")
    assert len(dm.train_set) == 1 and dm.counts["train"]["bad_rows_skipped"] == 2


def test_truncation_policy_and_counters(tmp_path, tokenizer):
    rows = [
        {"prompt": "p" * 30, "chosen": "a" * 5, "rejected": "b" * 5},  # prompt kept from its end
        {"prompt": "q", "chosen": "c" * 40, "rejected": "d" * 3},  # completion cut to the budget
        {"prompt": "r" * 20, "chosen": "samesame" + "x" * 9, "rejected": "samesame" + "y" * 9},  # identical once cut
    ]
    dm = loaded(tmp_path, rows, tokenizer, chat_template=False, max_length=28, max_prompt_length=20)
    first, second = dm.train_set.pairs
    assert len(first.prompt_ids) == 20 and len(first.chosen_ids) == 6  # 5 + EOS
    assert len(second.prompt_ids) + len(second.chosen_ids) == 28 and second.chosen_ids[-1] != tokenizer.eos_token_id
    assert dict(dm.counts["train"]) | {} == {
        "rows": 3, "pairs": 2, "prompt_truncated": 1, "completion_truncated": 2, "dropped_after_truncation": 1,
    }


def test_validation_split_by_fraction_is_disjoint_and_seeded(tmp_path, tokenizer):
    rows = [{"prompt": f"p{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(40)]
    a = loaded(tmp_path, rows, tokenizer, val_fraction=0.25, seed=3)
    b = loaded(tmp_path, rows, tokenizer, val_fraction=0.25, seed=3)
    prompts = lambda ds: [tokenizer.decode(p.prompt_ids) for p in ds.pairs]
    assert len(a.val_set) == 10 and len(a.train_set) == 30
    assert not set(prompts(a.val_set)) & set(prompts(a.train_set))
    assert prompts(a.val_set) == prompts(b.val_set)


@pytest.mark.parametrize("kind", ["json", "parquet", "saved_dataset"])
def test_other_sources(tmp_path, tokenizer, kind):
    rows = [{"prompt": "x", "chosen": "y", "rejected": "z", "score_chosen": 2, "score_rejected": 1}] * 3
    if kind == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(rows))
    else:
        import datasets

        ds = datasets.Dataset.from_list(rows)
        if kind == "parquet":
            path = tmp_path / "d.parquet"
            ds.to_parquet(str(path))
        else:
            path = tmp_path / "saved"
            datasets.DatasetDict({"train": ds}).save_to_disk(str(path))
    dm = PreferenceDataModule(train_path=str(path))
    dm._tokenizer = lambda: tokenizer
    dm.setup("fit")
    assert len(dm.train_set) == 3 and dm.train_set[0].scores == (2.0, 1.0)


def test_collated_batch_layout(tmp_path, tokenizer):
    rows = [{"prompt": "ab", "chosen": "c", "rejected": "de"}, {"prompt": "f", "chosen": "ghi", "rejected": "j"}]
    dm = loaded(tmp_path, rows, tokenizer, chat_template=False, pad_to_multiple_of=1)
    dm.trainer = None
    batch = next(iter(dm._loader(dm.train_set, 2, shuffle=False)))
    assert batch.input_ids.shape == (4, 5)  # rows: ab c E | f ghi E | ab de E | f j E
    assert batch.completion_mask.tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert batch.attention_mask.sum(-1).tolist() == [4, 5, 5, 3]
    assert batch.index.tolist() == [0, 1]
