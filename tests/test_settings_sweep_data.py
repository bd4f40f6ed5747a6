"""Every ``PreferenceDataModule`` setting changes what the module yields, or is listed as inert with why.

The settings are read from the signature, so a new one without a probe or an entry in ``INERT``
fails ``test_every_data_setting_is_probed_or_inert``. The observation is what a run sees: the
tokenised pairs of both splits, the first training batches in the sampler's order, the validation
batches, the counts, or the error a setting leads to.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from lit_align.data import PreferenceDataModule
from lit_align.data.packing import PackedPairCollator

INERT = {
    "num_workers": "worker processes run the same dataset and sampler: the same batches in the same order "
                   "(only the loading moves to other processes; tests/test_kill_resume.py runs workers)",
}

ROWS = [{"prompt": f"sort {i} {i + 3} {i % 4}", "chosen": f"{i % 4} {i} {i + 3}", "rejected": f"{i + 3} {i} {i % 4}"} for i in range(24)]
IMPLICIT = [{"chosen": f"\n\nHuman: q{i}\n\nAssistant: a{i}\n\nHuman: more\n\nAssistant: yes {i}",
             "rejected": f"\n\nHuman: q{i}\n\nAssistant: a{i}\n\nHuman: more\n\nAssistant: no"} for i in range(8)]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    from datasets import Dataset, DatasetDict

    from lit_align.models import TinyModel

    root = tmp_path_factory.mktemp("sweep_data")

    def jsonl(name: str, rows: list) -> str:
        (root / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
        return str(root / name)

    folder = root / "dataset"
    DatasetDict({"train": Dataset.from_list(ROWS[:16]), "test": Dataset.from_list(ROWS[16:20]),
                 "other": Dataset.from_list(ROWS[20:])}).save_to_disk(str(folder))
    tokenizers = {}
    for kind in ("byte", "word"):
        tokenizers[kind] = str(root / f"tok_{kind}")
        TinyModel(tokenizer=kind, hidden_size=32, num_layers=1, num_heads=2).load_tokenizer().save_pretrained(tokenizers[kind])
    return {
        "folder": str(folder), "train": jsonl("train.jsonl", ROWS[:16]), "val": jsonl("val.jsonl", ROWS[16:]),
        "other": jsonl("other.jsonl", ROWS[8:]), "implicit": jsonl("implicit.jsonl", IMPLICIT),
        "bad": jsonl("bad.jsonl", ROWS[:6] + ['{"prompt": "x", "chosen": 3}']),
        "byte": tokenizers["byte"], "word": tokenizers["word"],
    }


def base_settings(files) -> dict:
    return dict(train_path=files["folder"], val_path=files["folder"], batch_size=4, max_length=64, max_prompt_length=32,
                tokenizer=files["byte"], chat_template=False)


# setting -> (other base settings the probe needs, the changed value); values naming a file are looked up
PROBES = {
    "train_path": ({}, "@other"),
    "val_path": ({"val_path": "@val", "train_path": "@train"}, None),
    "val_fraction": ({"val_path": None}, 0.25),
    "format": ({}, "implicit"),  # explicit rows read as transcripts: refused, naming the row
    "train_split": ({}, "other"),
    "val_split": ({}, "other"),
    "chat_template": ({}, True),
    "assistant_marker": ({"train_path": "@implicit", "val_path": None, "format": "implicit"}, "\n\nHuman:"),
    "max_length": ({}, 14),
    "max_prompt_length": ({}, 6),
    "on_bad_row": ({"train_path": "@bad", "val_path": None, "on_bad_row": "skip"}, "error"),
    "batch_size": ({}, 3),
    "eval_batch_size": ({}, 3),
    "pad_to_multiple_of": ({}, 32),
    "limit": ({}, 10),
    "seed": ({}, 1),  # the training sampler's shuffle (and the val_fraction split)
    "tokenizer": ({}, "@word"),
    "collator": ({}, PackedPairCollator),
    "sources": ({"train_path": None, "val_path": None, "sources": [{"path": "@train"}]}, [{"path": "@train"}, {"path": "@other"}]),
    "mix_size": ({"train_path": None, "val_path": None, "sources": [{"path": "@train"}, {"path": "@other"}]}, 40),
    "allow_val_in_train": ({"train_path": "@train", "val_path": "@train", "allow_val_in_train": True}, False),  # then refused
}


def resolve(files, value):
    if isinstance(value, list):
        return [resolve(files, v) for v in value]
    if isinstance(value, dict):
        return {k: resolve(files, v) for k, v in value.items()}
    return files[value[1:]] if isinstance(value, str) and value.startswith("@") else value


def observe(settings: dict) -> list:
    """What a run sees of the data, or the error it stops with."""
    try:
        dm = PreferenceDataModule(**settings)
        dm.setup("fit")
        seen: list = [dict(dm.counts)]
        for split in (dm.train_set, dm.val_set):
            seen.append(None if split is None else [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in split.pairs])
        train = iter(dm.train_dataloader())
        seen += [{k: v for k, v in vars(next(train)).items() if isinstance(v, torch.Tensor)} for _ in range(2)]
        seen += [{k: v for k, v in vars(b).items() if isinstance(v, torch.Tensor)} for b in dm.val_dataloader()]
        return seen
    except Exception as error:  # noqa: BLE001 - a refusal is an observable outcome of a setting
        return [f"{type(error).__name__}: {error}"]


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


SETTINGS = [name for name in inspect.signature(PreferenceDataModule.__init__).parameters if name != "self"]


def test_every_data_setting_is_probed_or_inert():
    assert set(SETTINGS) == set(PROBES) | set(INERT), "a data setting with neither a probe nor a reason to be inert"
    assert not set(PROBES) & set(INERT)


@pytest.mark.parametrize("setting", sorted(PROBES))
def test_changing_a_data_setting_changes_what_the_run_sees(files, setting):
    extra, value = PROBES[setting]
    base = base_settings(files) | {k: resolve(files, v) for k, v in extra.items()}
    base_seen = observe(base)
    assert not isinstance(base_seen[0], str), base_seen  # the unchanged settings work
    changed = observe(base | {setting: resolve(files, value)})
    assert not same(base_seen, changed), f"{setting}={value!r} changed nothing"


def test_the_training_order_follows_the_seed_and_only_the_seed(files):
    """data.seed drives the training sampler: two modules with one seed give one order; another seed,
    another order (the sweep above sees a change; this checks it is the order that changes)."""
    def order(seed: int) -> list[int]:
        dm = PreferenceDataModule(**base_settings(files) | {"seed": seed, "batch_size": 16})
        dm.setup("fit")
        return next(iter(dm.train_dataloader())).index.tolist()

    assert order(0) == order(0) and sorted(order(0)) == list(range(16))
    assert order(1) != order(0)
