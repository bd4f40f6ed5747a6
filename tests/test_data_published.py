"""TRL's preference formats as datasets publish them, stored as jsonl, parquet (a hub repository's
data/<split>-*.parquet layout) and save_to_disk, read with their own split names.

The expected prompt and completion texts come from TRL itself (trl.data_utils.maybe_extract_prompt
and apply_chat_template, an independent implementation of the same formats).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit_align.data import DataError, PreferenceDataModule
from lit_align.errors import ConfigError

QA = [  # (question, better answer, worse answer, score_chosen, score_rejected): ultrafeedback-like content
    ("How do I reverse a list in Python?", "Use `items[::-1]` for a copy or `items.reverse()` in place.", "Lists cannot be reversed.", 9.0, 2.5),
    ("What is the boiling point of water at sea level?", "100 degrees Celsius (212 F).", "About 50 degrees.", 8.5, 3.0),
    ("Name a prime number between 10 and 20.", "13 is prime: its only divisors are 1 and 13.", "15", 7.0, 1.0),
    ("Translate 'good morning' into French.", "Bonjour.", "Bonne nuit.", 10.0, 4.0),
]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def ultrafeedback(q, good, bad, sc, sr, i) -> dict:
    """HuggingFaceH4/ultrafeedback_binarized's schema: string prompt, whole conversations, scores, messages."""
    chosen = [user(q), assistant(good)]
    return {"prompt": q, "prompt_id": f"{i:064x}", "chosen": chosen, "rejected": [user(q), assistant(bad)],
            "messages": chosen, "score_chosen": sc, "score_rejected": sr}


FORMATS = {  # TRL's preference formats (docs: dataset_formats), one row builder each
    "standard_explicit": lambda q, good, bad, sc, sr, i: {"prompt": q, "chosen": good, "rejected": bad},
    "standard_implicit": lambda q, good, bad, sc, sr, i: {"chosen": f"\n\nHuman: {q}\n\nAssistant: {good}",
                                                          "rejected": f"\n\nHuman: {q}\n\nAssistant: {bad}"},
    "standard_implicit_plain": lambda q, good, bad, sc, sr, i: {"chosen": f"Q: {q} A: {good}", "rejected": f"Q: {q} A: {bad}"},
    "conversational_explicit": lambda q, good, bad, sc, sr, i: {
        "prompt": [{"role": "system", "content": "Answer briefly."}, user(q)], "chosen": [assistant(good)], "rejected": [assistant(bad)]},
    "conversational_implicit": lambda q, good, bad, sc, sr, i: {
        "chosen": [user("Hi."), assistant("Hello! Ask away."), user(q), assistant(good)],
        "rejected": [user("Hi."), assistant("Hello! Ask away."), user(q), assistant(bad)]},
    "conversational_with_scores": lambda q, good, bad, sc, sr, i: {
        "prompt": [user(q)], "chosen": [assistant(good)], "rejected": [assistant(bad)], "score_chosen": sc, "score_rejected": sr},
    "ultrafeedback_binarized": ultrafeedback,
    "string_prompt_message_answers": lambda q, good, bad, sc, sr, i: {"prompt": q, "chosen": [assistant(good)], "rejected": [assistant(bad)]},
}


def rows(fmt: str, offset: int = 0) -> list[dict]:
    return [FORMATS[fmt](q + ("" if not offset else f" (set {offset})"), g, b, sc, sr, i + offset) for i, (q, g, b, sc, sr) in enumerate(QA)]


def store(kind: str, root: Path, splits: dict[str, list[dict]]) -> dict[str, str]:
    """The splits written as ``kind``; returns the data module's path settings for each split."""
    import datasets

    if kind == "jsonl":
        paths = {}
        for split, data in splits.items():
            path = root / f"{split}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in data))
            paths[split] = str(path)
        return paths
    if kind == "hub_parquet":  # a dataset repository as published: data/<split>-00000-of-00001.parquet
        (root / "data").mkdir(parents=True)
        for split, data in splits.items():
            datasets.Dataset.from_list(data).to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
        return {split: str(root) for split in splits}
    datasets.DatasetDict({s: datasets.Dataset.from_list(d) for s, d in splits.items()}).save_to_disk(str(root / "saved"))
    return {split: str(root / "saved") for split in splits}


def trl_texts(row: dict, tokenizer) -> tuple[str, str, str]:
    """TRL's prompt / chosen / rejected texts for a row (its chosen keeps the template's end-of-turn)."""
    from trl.data_utils import apply_chat_template, extract_prompt, is_conversational, maybe_extract_prompt

    row = {k: v for k, v in row.items() if k in ("prompt", "chosen", "rejected")}
    if "prompt" not in row and "\n\nAssistant:" in row["chosen"]:  # TRL cuts text at the first differing character;
        return None  # HH transcripts are cut at the last "\n\nAssistant:" here (test_data.py checks that)
    if "prompt" not in row and not is_conversational(row):  # text with no turns: TRL's own split, no template
        return tuple(extract_prompt(row)[k] for k in ("prompt", "chosen", "rejected"))
    if isinstance(row.get("prompt"), str) and isinstance(row["chosen"], list) and row["chosen"][0]["role"] == "assistant":
        row = {**row, "prompt": [user(row["prompt"])]}  # TRL would extract an empty prompt; here it is the user turn
    row = maybe_extract_prompt(row)
    if is_conversational(row):
        out = apply_chat_template(row, tokenizer)
        return out["prompt"], out["chosen"], out["rejected"]
    return tokenizer.apply_chat_template([user(row["prompt"])], tokenize=False, add_generation_prompt=True), row["chosen"], row["rejected"]


def decoded(tokenizer, pair) -> tuple[str, str, str]:
    return tuple(tokenizer.decode(ids) for ids in (pair.prompt_ids, pair.chosen_ids, pair.rejected_ids))


@pytest.mark.parametrize("kind", ["jsonl", "hub_parquet", "save_to_disk"])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_published_format_loads_with_its_own_splits(tmp_path, tokenizer, fmt, kind):
    train, test = rows(fmt), rows(fmt, offset=100)[:2]
    paths = store(kind, tmp_path, {"train_prefs": train, "test_prefs": test})
    if kind == "jsonl":  # files have no splits: the validation file is named
        dm = PreferenceDataModule(train_path=paths["train_prefs"], val_path=paths["test_prefs"])
    else:  # the validation split of the same dataset, its path not repeated
        dm = PreferenceDataModule(train_path=paths["train_prefs"], train_split="train_prefs", val_split="test_prefs")
    dm._tokenizer = lambda: tokenizer
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (4, 2)
    for split, data in ((dm.train_set, train), (dm.val_set, test)):
        for row, pair in zip(data, split.pairs):
            prompt, chosen, rejected = decoded(tokenizer, pair)
            expected = trl_texts(row, tokenizer)
            if expected is not None:
                assert prompt == expected[0]
                # ours: the completion then EOS (<|im_end|>); TRL's: the text, or the template's end of turn
                for ours, theirs in ((chosen, expected[1]), (rejected, expected[2])):
                    body = ours.removesuffix("<|im_end|>")
                    assert theirs in (body, body + "<|im_end|>\n"), (ours, theirs)
            assert chosen.endswith("<|im_end|>") and rejected.endswith("<|im_end|>")
            if "score_chosen" in row:
                assert pair.scores == (row["score_chosen"], row["score_rejected"])
            else:
                assert pair.scores is None


def test_ultrafeedback_prompt_is_the_shared_user_turn(tmp_path, tokenizer):
    """The string prompt beside whole conversations: the prompt is rendered once, the answers alone follow."""
    dm = PreferenceDataModule(train_path=store("jsonl", tmp_path, {"t": rows("ultrafeedback_binarized")})["t"])
    dm._tokenizer = lambda: tokenizer
    dm.setup("fit")
    prompt, chosen, rejected = decoded(tokenizer, dm.train_set[0])
    assert prompt == "<|im_start|>user\nHow do I reverse a list in Python?<|im_end|>\n<|im_start|>assistant\n"
    assert chosen == "Use `items[::-1]` for a copy or `items.reverse()` in place.<|im_end|>"
    assert rejected == "Lists cannot be reversed.<|im_end|>"


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(prompt="Something else entirely"), "field 'prompt' is not the last user turn"),
    (lambda r: r.update(rejected=[user("Other question"), assistant("x")]), "share no leading messages"),
    (lambda r: r.update(rejected=list(r["chosen"])), "identical to 'chosen'"),
    (lambda r: r.update(chosen=[user(r["prompt"]), user("again")]), "must start with an assistant message"),
])
def test_ultrafeedback_inconsistent_rows_are_refused(tmp_path, mutate, message):
    data = rows("ultrafeedback_binarized")
    mutate(data[2])
    with pytest.raises(DataError) as err:
        PreferenceDataModule(train_path=store("jsonl", tmp_path, {"t": data})["t"])
    assert ":3: " in str(err.value) and message in str(err.value), str(err.value)


def test_val_split_of_a_single_file_is_refused(tmp_path):
    path = store("jsonl", tmp_path, {"t": rows("standard_explicit")})["t"]
    with pytest.raises(ConfigError, match="single file, which has no splits: set val_path"):
        PreferenceDataModule(train_path=path, val_split="test_prefs")


def test_missing_split_names_the_ones_there(tmp_path):
    path = store("save_to_disk", tmp_path, {"train_prefs": rows("standard_explicit")})["train_prefs"]
    with pytest.raises(DataError, match=r"no split 'train' \(has \['train_prefs'\]\)"):
        PreferenceDataModule(train_path=path)
