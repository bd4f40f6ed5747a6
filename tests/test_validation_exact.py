"""Validation metrics on splits that do not divide evenly over ranks: every pair counts exactly once.

DistributedSampler evens out ranks by repeating up to world_size - 1 pairs. Evaluation loaders
mark those repeats (``PreferenceBatch.is_padding``); they still run through the forward (a
collective under FSDP) and weigh 0 in ``validation_step``. The expected values are computed here
from the two models directly: per-pair DPO terms of the split's pairs in one batch, averaged in
float64 by hand, with the KL estimate as total log-ratio over total completion tokens.

Tolerance: metrics are float32 batch means re-weighted into float32 sums, against float64 means of
the same float32 per-pair values (padded to the same multiple of 8, so the same row lengths).
Log-prob means are about -50 here, where float32 itself resolves 4e-6, so the comparison is
relative 1e-6 (absolute 1e-6 near 0). Measured, one process: at most 8e-8 relative (4.4e-6
absolute on logps/chosen), 5e-8 absolute on every other metric; two processes (DDP and FSDP2): at
most 3e-8 relative (1.4e-6 absolute on logps/rejected), 1e-8 absolute elsewhere. The prompt-shared layout scores each pair in
another attention layout (test_packing.py: 1e-5 absolute); against the padded oracle it differs by
up to 1.4e-6 absolute (rewards), so that variant is compared at 1e-5 absolute.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lit_align.batch import LogpsRequest
from lit_align.data import PreferenceDataModule
from lit_align.data.collate import PairCollator
from lit_align.data.datamodule import MarkedPaddingSampler, PairDataset
from lit_align.data.packing import PackedPairCollator, SharedPromptCollator
from lit_align.data.tokenize import TokenizedPair
from lit_align.logprobs import sequence_logps
from lit_align.models import TinyModel
from tests.conftest import quiet_trainer
from tests.helpers_distributed import save_config

BETA = 0.5
SHAPE = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_position_embeddings": 128}
REL = 1e-6
SHARED_LAYOUT_ATOL = 1e-5
METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
           "logps/chosen", "logps/rejected", "logps/accuracies", "kl/per_token")


def approx(value: float, atol: float = 1e-6):
    return pytest.approx(value, rel=REL, abs=atol)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from benchmarks.demos.sort_task import write_task

    directory = tmp_path_factory.mktemp("val_exact")
    write_task(directory, train=8, val=7, test=1)  # 7 pairs: uneven over 2 ranks
    return directory


@pytest.fixture(scope="module")
def val_pairs(data_dir) -> list[TokenizedPair]:
    dm = PreferenceDataModule(train_path=str(data_dir / "train.jsonl"), val_path=str(data_dir / "val.jsonl"),
                              max_length=64, max_prompt_length=32)
    dm._tokenizer = TinyModel(**SHAPE).load_tokenizer
    dm.setup("validate")
    assert len(dm.val_set) == 7
    return dm.val_set.pairs


def expected_metrics(pairs: list[TokenizedPair]) -> dict[str, float]:
    """DPO's validation metrics over ``pairs`` (repeats count as often as listed), from first principles."""
    batch = PairCollator(pad_token_id=0, pad_to_multiple_of=8)(pairs)
    with torch.no_grad():
        pi = sequence_logps(TinyModel(**SHAPE, seed=0).load_model(), batch)
        ref = sequence_logps(TinyModel(**SHAPE, seed=1).load_model(), batch)
    pw, pl, qw, ql = (t.double() for t in (pi.chosen, pi.rejected, ref.chosen, ref.rejected))
    rw, rl = BETA * (pw - qw), BETA * (pl - ql)
    tokens = (pi.chosen_tokens + pi.rejected_tokens).sum().double()
    return {
        "loss": float(-F.logsigmoid(rw - rl).mean()),
        "rewards/chosen": float(rw.mean()), "rewards/rejected": float(rl.mean()),
        "rewards/margins": float((rw - rl).mean()), "rewards/accuracies": float((rw > rl).double().mean()),
        "logps/chosen": float(pw.mean()), "logps/rejected": float(pl.mean()),
        "logps/accuracies": float((pw > pl).double().mean()),
        "kl/per_token": float(((pw - qw) + (pl - ql)).sum() / tokens),
    }


def assert_matches(metrics: dict[str, float], expected: dict[str, float], atol: float = 1e-6) -> None:
    for name in METRICS:
        assert metrics[f"val/{name}"] == approx(expected[name], atol), name


# --- the sampler and the collators -------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n", [1, 2, 5, 7])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_sampler_marks_exactly_the_repeats(n, world, shuffle):
    from torch.utils.data import DistributedSampler

    dataset = list(range(n))
    per_rank = [list(MarkedPaddingSampler(dataset, world, rank, shuffle=shuffle, seed=3)) for rank in range(world)]
    for rank, samples in enumerate(per_rank):  # the same indices as the plain sampler: training order unchanged
        plain = DistributedSampler(dataset, world, rank, shuffle=shuffle, seed=3, drop_last=False)
        assert [i for i, _ in samples] == list(plain)
    assert len({len(s) for s in per_rank}) == 1  # equal batch counts on every rank
    real = sorted(i for samples in per_rank for i, padding in samples if not padding)
    assert real == list(range(n))  # every pair once
    assert sum(padding for samples in per_rank for _, padding in samples) == world * math.ceil(n / world) - n


def pairs_of(n: int, seed: int = 0) -> list[TokenizedPair]:
    g = torch.Generator().manual_seed(seed)

    def ids(lo: int, hi: int) -> list[int]:
        return torch.randint(3, 250, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()

    return [TokenizedPair(ids(1, 12), ids(1, 9), ids(1, 9), index=i) for i in range(n)]


@pytest.mark.parametrize("collator", [PairCollator(0, 8), PackedPairCollator(0, 1), SharedPromptCollator(0, 1)],
                         ids=["padded", "packed", "shared"])
def test_collators_carry_the_flag(collator):
    pairs = pairs_of(3)
    assert collator(pairs).is_padding is None
    flagged = collator([pairs[0], replace(pairs[1], padding=True), pairs[2]])
    assert flagged.is_padding.tolist() == [False, True, False] and flagged.has_padding


def test_datamodule_marks_repeats_in_evaluation_only(data_dir):
    dm = PreferenceDataModule(train_path=str(data_dir / "val.jsonl"), val_path=str(data_dir / "val.jsonl"),
                              batch_size=2, eval_batch_size=2, max_length=64, max_prompt_length=32, allow_val_in_train=True)
    dm._tokenizer = TinyModel(**SHAPE).load_tokenizer
    dm.setup("fit")
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)  # rank 1 of 2: pairs 1, 3, 5 and a repeat of 0
    val = list(dm.val_dataloader())
    assert [b.index.tolist() for b in val] == [[1, 3], [5, 0]]
    assert val[0].is_padding is None and val[1].is_padding.tolist() == [False, True]
    train = list(dm._loader(dm.train_set, 2, shuffle=False))  # training keeps the usual, unmarked repeats
    assert [b.index.tolist() for b in train] == [[1, 3], [5, 0]] and all(b.is_padding is None for b in train)


# --- selecting pairs after the forward ------------------------------------------------------------


@pytest.mark.parametrize("collator", [PairCollator(0, 8), PackedPairCollator(0, 1), SharedPromptCollator(0, 1)],
                         ids=["padded", "packed", "shared"])
def test_select_pairs_keeps_the_pairs_log_probs(collator):
    model = TinyModel(**SHAPE).load_model()
    pairs = pairs_of(5, seed=1)
    keep = torch.tensor([True, False, True, True, False])
    request = LogpsRequest(sum_sq_probs=True, token_logps=not isinstance(collator, PackedPairCollator))
    batch = collator(pairs)
    with torch.no_grad():
        full = sequence_logps(model, batch, request).select_pairs(keep)
        selected = sequence_logps(model, batch.select_pairs(keep), request)
        alone = sequence_logps(model, collator([p for p, k in zip(pairs, keep) if k]), request)
    sub = batch.select_pairs(keep)
    assert sub.num_pairs == 3 and sub.index.tolist() == [0, 2, 3] and sub.prompt_lengths.tolist() == [len(pairs[i].prompt_ids) for i in (0, 2, 3)]
    for other in (selected, alone):  # the same log-probs as selecting after the forward, and as collating them alone
        for name in ("chosen", "rejected", "mean_log_sum_sq_probs"):
            torch.testing.assert_close(getattr(other, name), getattr(full, name), rtol=0, atol=1e-5)
        assert torch.equal(other.chosen_tokens, full.chosen_tokens) and torch.equal(other.rejected_tokens, full.rejected_tokens)
    if request.token_logps:
        torch.testing.assert_close(selected.token_logps, full.token_logps, rtol=0, atol=1e-5)


# --- one process: marked repeats weigh nothing ----------------------------------------------------


def module():
    from lit_align.losses import DPO
    from lit_align.module import PreferenceModule
    from lit_align.reference import FrozenReference

    return PreferenceModule(model=TinyModel(**SHAPE, seed=0), loss=DPO(beta=BETA),
                            reference=FrozenReference(source=TinyModel(**SHAPE, seed=1)))


# 7 pairs, then 5 repeats; batches of 3: [0 1 2] [3 4 5] [6 0* 3*] [1* 2* 4*] (* marked): one
# batch mixes pairs and repeats, one holds repeats only
ORDER = [(i, False) for i in range(7)] + [(0, True), (3, True), (1, True), (2, True), (4, True)]


@pytest.mark.parametrize(("collator", "atol"), [(PairCollator, 1e-6), (SharedPromptCollator, SHARED_LAYOUT_ATOL)],
                         ids=["padded", "shared"])
def test_marked_repeats_weigh_nothing_in_validation(val_pairs, collator, atol):
    from torch.utils.data import DataLoader

    def validate(order) -> dict[str, float]:
        loader = DataLoader(PairDataset(val_pairs), batch_size=3, sampler=order, collate_fn=collator(0, 8))
        return quiet_trainer().validate(module(), dataloaders=loader, verbose=False)[0]

    assert_matches(validate(ORDER), expected_metrics(val_pairs), atol)
    # unmarked, the same repeats count like pairs (what DistributedSampler alone does): the test can tell
    unmarked = validate([(i, False) for i, _ in ORDER])
    assert_matches(unmarked, expected_metrics([val_pairs[i] for i, _ in ORDER]), atol)
    assert unmarked["val/loss"] != approx(expected_metrics(val_pairs)["loss"], atol)


# --- two processes --------------------------------------------------------------------------------


def validate_config(run_dir: Path, data_dir: Path, eval_batch_size: int) -> Path:
    tiny = {"class_path": "lit_align.models.TinyModel", "init_args": SHAPE}
    config = {
        "model": {
            "model": tiny,
            "loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": BETA}},
            "reference": {"class_path": "lit_align.reference.FrozenReference",
                          "init_args": {"source": {**tiny, "init_args": {**SHAPE, "seed": 1}}}},
        },
        "data": {"class_path": "lit_align.data.PreferenceDataModule",
                 "init_args": {"train_path": str(data_dir / "train.jsonl"), "val_path": str(data_dir / "val.jsonl"),
                               "eval_batch_size": eval_batch_size, "max_length": 64, "max_prompt_length": 32}},
        "trainer": {
            "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(run_dir), "name": "run", "version": ""}},
            "callbacks": [{"class_path": "tests.helpers_distributed.MetricsRecorder",
                           "init_args": {"path": str(run_dir / "metrics.json")}}],
        },
    }
    return save_config(config, run_dir / "validate.yaml")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize(("strategy", "eval_batch_size"), [("ddp", 2), ("fsdp2", 3)])
def test_two_processes_on_an_uneven_split_match_one(strategy, eval_batch_size, data_dir, val_pairs, tmp_path):
    """7 pairs over 2 ranks: rank 1 gets 1, 3, 5 and a repeat of 0. Batches of 2 put the repeat beside
    pair 5; batches of 3 give rank 1 a batch holding only the repeat (under FSDP2 it must still run
    its forward, or rank 0 would wait forever)."""
    from tests.helpers_distributed import launch

    launch("validate", validate_config(tmp_path, data_dir, eval_batch_size), strategy=strategy, devices=2)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert_matches(metrics, expected_metrics(val_pairs))
    # what the unmarked sampler gave: pair 0 counted twice (a different value, so the check can fail)
    assert expected_metrics(val_pairs + val_pairs[:1])["loss"] != approx(metrics["val/loss"])

