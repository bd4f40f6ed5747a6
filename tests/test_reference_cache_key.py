"""``CachedReference``'s key: each input that changes the cached numbers changes the key, one at a time.

A key that missed one input would let a run load another run's reference log-probs (another
reference model, dtype, tokenizer, data or length budget) without a word. The inputs are read from
``key_inputs``, so a new input without a variation here fails ``test_every_key_input_is_varied``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from benchmarks.demos.sort_task import write_task
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.models import PretrainedModel, TinyModel
from lit_align.models.sources import save_tiny
from lit_align.reference import CachedReference
from lit_align.reference import cached
from lit_align.reference.base import ReferenceContext
from tests.helpers_reference import TINY

POLICY = TinyModel(seed=0, **TINY)


def pairs(paths: dict[str, Path], tokenizer, **settings) -> list:
    kwargs = dict(max_length=64, max_prompt_length=32, chat_template=False) | settings
    dm = PreferenceDataModule(train_path=str(paths["train"]), **kwargs)
    return dm.load(str(paths["train"]), "train", tokenizer, "train")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    paths = write_task(tmp_path_factory.mktemp("data"), train=24, val=4, test=4)
    tokenizer = POLICY.load_tokenizer()
    return paths, tokenizer


def key(base, strategy: CachedReference | None = None, policy: TinyModel = POLICY, dtype=torch.float32, tokenizer=None, **data) -> str:
    paths, default_tokenizer = base
    tokenizer = tokenizer or default_tokenizer
    context = ReferenceContext(policy_source=policy, tokenizer=tokenizer, chunk_size=1024)
    return (strategy or CachedReference()).key(context, pairs(paths, tokenizer, **data), dtype)


def other_tokenizer(base):
    tokenizer = POLICY.load_tokenizer()
    tokenizer.add_tokens(["<extra>"])  # the same text tokenises the same; the vocabulary differs
    return tokenizer


VARIATIONS = {
    # input of key_inputs -> ways to change only that input (each must change the key)
    "reference": [
        lambda b: key(b, CachedReference(source=TinyModel(seed=1, **TINY))),  # another reference model
        lambda b: key(b, policy=TinyModel(seed=1, **TINY)),  # source None: the policy's start, which differs
    ],
    "dtype": [
        lambda b: key(b, CachedReference(dtype="bfloat16")),
        lambda b: key(b, dtype=torch.bfloat16),  # dtype None follows the policy's (a bf16-true run)
    ],
    "tokenizer": [lambda b: key(b, tokenizer=other_tokenizer(b))],
    "data": [
        lambda b: key(b, limit=23),  # one pair fewer
        lambda b: key(b, max_length=26, max_prompt_length=26),  # shorter completions (prompts of 11-17 tokens, completions up to 12)
        lambda b: key(b, max_prompt_length=12),  # shorter prompts
        lambda b: key(b, chat_template=True),  # the prompt wrapped in the template
    ],
    "unconditional": [lambda b: key(b, CachedReference(unconditional=True))],
}


def test_every_key_input_is_varied(base):
    paths, tokenizer = base
    context = ReferenceContext(policy_source=POLICY, tokenizer=tokenizer, chunk_size=1024)
    inputs = set(CachedReference().key_inputs(context, pairs(paths, tokenizer), torch.float32))
    assert inputs == set(VARIATIONS) | {"version"}, "a key input without a variation below, or a variation of no input"


CASES = [(name, i) for name, changes in VARIATIONS.items() for i in range(len(changes))]


@pytest.mark.parametrize("name, i", CASES, ids=[f"{n}{i}" for n, i in CASES])
def test_changing_one_input_changes_the_key(base, name, i):
    assert VARIATIONS[name][i](base) != key(base)


def test_the_key_is_stable_and_the_version_is_in_it(base, monkeypatch):
    """Same inputs, same key (a new strategy object, settings that do not change the numbers); a new
    CACHE_VERSION, another key."""
    first = key(base)
    assert key(base, CachedReference(cache_dir="elsewhere", batch_size=3)) == first
    monkeypatch.setattr(cached, "CACHE_VERSION", cached.CACHE_VERSION + 1)
    assert key(base) != first


def test_a_model_directory_saved_again_is_another_reference(tmp_path):
    """An HF directory overwritten with other weights of the same size, within the same second, is
    another reference: its identity (the reference input of the key) follows the files' mtimes in ns."""
    directory = save_tiny(tmp_path / "ref", seed=0, **TINY)
    before = PretrainedModel(str(directory)).identity()
    weights = directory / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    save_tiny(directory, seed=1, **TINY)
    os.utime(weights, ns=(stamp + 1000, stamp + 1000))  # same second, same size: only the ns differ
    assert PretrainedModel(str(directory)).identity() != before
