"""Cached, dataset-column and unconditional references; impossible combinations stop at startup."""

from __future__ import annotations


import pytest
import torch

from tests.helpers_reference import data, fit, module, tiny_source
from lit_align.batch import LogpsRequest, PreferenceBatch
from lit_align.data.collate import PairCollator
from lit_align.logprobs import sequence_logps
from lit_align.losses import DPO
from lit_align.reference import (
    CachedReference,
    DatasetColumnReference,
    NoReference,
    UnconditionalReference,
)
from lit_align.reference.cached import data_fingerprint
from lit_align.reference.unconditional import strip_prompts


def toy_batch() -> PreferenceBatch:
    """One pair: prompt [5, 6], chosen [7, 8], rejected [9]; pad 0, right-padded to 4."""
    return PreferenceBatch(
        input_ids=torch.tensor([[5, 6, 7, 8], [5, 6, 9, 0]]),
        attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        completion_mask=torch.tensor([[0, 0, 1, 1], [0, 0, 1, 0]]),
        index=torch.tensor([3]),
        ref_logps=torch.tensor([[-1.5, -2.5]]),
    )


def test_strip_prompts_repacks_completions_behind_one_start_token():
    """start id 1: chosen -> [1, 7, 8] scored at 7, 8; rejected -> [1, 9, pad] scored at 9."""
    out = strip_prompts(toy_batch(), start_id=1)
    assert out.input_ids.tolist() == [[1, 7, 8], [1, 9, 1]]
    assert out.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out.completion_mask.tolist() == [[0, 1, 1], [0, 1, 0]]
    assert out.index.tolist() == [3]


def test_dataset_columns_are_the_reference_and_missing_columns_say_what_to_do():
    batch = toy_batch()
    out = DatasetColumnReference().logps(None, batch, LogpsRequest())
    assert out.chosen.tolist() == [-1.5] and out.rejected.tolist() == [-2.5]
    assert out.chosen_tokens.tolist() == [2] and out.rejected_tokens.tolist() == [1]
    batch.ref_logps = None
    with pytest.raises(ValueError, match="ref_chosen_logps"):
        DatasetColumnReference().logps(None, batch, LogpsRequest())


def test_lookup_uses_the_split_being_run():
    """Pair index 3 of train holds (-1, -2); of val (-10, -20): the module's train / eval mode, which
    Lightning sets for each loop and the strategy follows as a submodule, picks the table."""
    strategy = CachedReference()
    strategy.tables = {"train": torch.tensor([[0.0, 0.0]] * 3 + [[-1.0, -2.0]]), "val": torch.tensor([[0.0, 0.0]] * 3 + [[-10.0, -20.0]])}
    m = module(strategy)
    for training, expected in ((True, [-1.0, -2.0]), (False, [-10.0, -20.0])):
        m.train(training)
        out = strategy.logps(None, toy_batch(), LogpsRequest())
        assert [out.chosen.item(), out.rejected.item()] == expected


def test_impossible_combinations_stop_at_construction():
    with pytest.raises(ValueError, match="needs reference log-probs"):
        module(NoReference(), loss=DPO())

    class MixesLogits(DPO):  # stands for epsilon-DPO: asks the log-prob pass for a logit mix
        @property
        def logps_request(self) -> LogpsRequest:
            return LogpsRequest(mix_eps=0.01)

    for strategy in (CachedReference(), DatasetColumnReference(), UnconditionalReference()):
        with pytest.raises(ValueError, match="mixes reference logits"):
            module(strategy, loss=MixesLogits())


def reference_logps(pairs, unconditional: bool = False) -> torch.Tensor:
    """The policy's start weights (same seed) scored one pair at a time, without any cache."""
    model = tiny_source().load_model().eval()
    collate = PairCollator(257, 1)
    rows = []
    with torch.no_grad():
        for p in pairs:
            batch = collate([p])
            if unconditional:
                batch = strip_prompts(batch, start_id=256)  # the tiny tokenizer has no BOS: EOS (256) starts
            out = sequence_logps(model, batch)
            rows.append([out.chosen.item(), out.rejected.item()])
    return torch.tensor(rows)


def test_cache_is_computed_once_and_a_beta_sweep_runs_zero_reference_forwards(tmp_path):
    """Run 1 fills the cache: 64 train pairs / 16 per forward + 16 val pairs = 4 + 1 forwards.
    Its values equal the start weights scored pair by pair. Run 2 (another beta, a new strategy
    object, same cache_dir) loads both splits and runs 0 reference forwards while training."""
    cache = str(tmp_path / "cache")
    dm = data(tmp_path)
    first = CachedReference(cache_dir=cache, batch_size=16)
    fit(tmp_path, first, steps=2, dm=dm)
    assert first.status == {"train": "computed", "val": "computed"} and first.forwards == 5
    pairs = dm.train_set.pairs[:6]
    torch.testing.assert_close(first.tables["train"][[p.index for p in pairs]], reference_logps(pairs), rtol=0, atol=2e-5)

    second = CachedReference(cache_dir=cache, batch_size=16)
    _, trainer = fit(tmp_path, second, steps=3, loss=DPO(beta=0.5))
    assert second.status == {"train": "loaded", "val": "loaded"}
    assert second.forwards == 0 and second.hits == 3
    assert trainer.callback_metrics["train/ref/forwards"].item() == 0.0
    assert trainer.callback_metrics["train/ref/cache_loaded"].item() == 1.0


def test_cache_key_changes_with_the_data_and_the_scoring_mode(tmp_path):
    dm = data(tmp_path)
    m = module(CachedReference())
    dm.trainer = None
    dm.tokenizer_path = None
    pairs = [p for p in dm.load(dm.train_path, "train", m.tokenizer, "train")]
    assert data_fingerprint(pairs) != data_fingerprint(pairs[1:])
    context = m.reference_context()
    assert CachedReference().key(context, pairs, torch.float32) != CachedReference(unconditional=True).key(context, pairs, torch.float32)
    assert CachedReference().key(context, pairs, torch.float32) != CachedReference().key(context, pairs[:-1], torch.float32)


def test_unconditional_scores_equal_the_completion_alone(tmp_path):
    """Cached unconditional values and the live UnconditionalReference both equal the start
    weights scoring [EOS] + completion with no prompt, pair by pair."""
    dm = data(tmp_path)
    cached = CachedReference(cache_dir=str(tmp_path / "cache"), unconditional=True)
    fit(tmp_path, cached, steps=1, dm=dm)
    pairs = dm.train_set.pairs[:4]
    expected = reference_logps(pairs, unconditional=True)
    torch.testing.assert_close(cached.tables["train"][[p.index for p in pairs]], expected, rtol=0, atol=2e-5)
    assert not torch.allclose(expected, reference_logps(pairs), atol=1e-3)  # the prompt matters

    live = UnconditionalReference()
    m = module(live)
    m.configure_model()
    out = live.logps(m.policy, PairCollator(257, 8)(pairs), LogpsRequest())
    torch.testing.assert_close(torch.stack([out.chosen, out.rejected], -1), expected, rtol=0, atol=2e-5)
