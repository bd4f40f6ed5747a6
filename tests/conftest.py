"""Shared fixtures: tiny models built in the test, synthetic data, the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"{SHARED_DATA} is missing: CI puts ../shared beside the repo"
    return SHARED_DATA


@pytest.fixture
def tiny_source():
    from lit_align.models import TinyModel

    return TinyModel(hidden_size=32, num_layers=1, num_heads=2, seed=0)


@pytest.fixture(scope="session")
def tokenizer():
    from lit_align.models.tiny_tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture
def sort_task(tmp_path) -> dict[str, Path]:
    from benchmarks.demos.sort_task import write_task

    return write_task(tmp_path / "data", train=64, val=16, test=16)


def quiet_trainer(**kwargs):
    """A CPU Trainer with no logger, bars or summaries, and the data module's own sampler."""
    from lit_align.trainer import quiet_trainer as library_quiet_trainer

    return library_quiet_trainer(**kwargs)
