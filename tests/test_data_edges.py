"""Data edges that uniform test data cannot show: which end of a long text truncation keeps (on
texts of distinct tokens), and pairs with an empty prompt in every collation layout."""

from __future__ import annotations

import pytest
import torch

from lit_align.data.collate import PairCollator
from lit_align.data.packing import PackedPairCollator, SharedPromptCollator
from lit_align.data.tokenize import TokenizedPair
from lit_align.logprobs import sequence_logps
from tests.test_data import loaded

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"  # one byte token each, all distinct


def test_truncation_keeps_the_prompts_end_and_the_completions_start(tmp_path, tokenizer):
    """A 40-token prompt cut to 20 keeps tokens 20..39 (the end, nearest the answer); a 30-token
    completion cut to the budget keeps its first tokens, in order."""
    prompt, chosen, rejected = ALPHABET[:40], ALPHABET[30:60], ALPHABET[::2][:30]
    dm = loaded(tmp_path, [{"prompt": prompt, "chosen": chosen, "rejected": rejected}], tokenizer,
                chat_template=False, max_length=32, max_prompt_length=20)
    (pair,) = dm.train_set.pairs
    assert tokenizer.decode(pair.prompt_ids) == prompt[-20:]
    assert tokenizer.decode(pair.chosen_ids) == chosen[:12] and tokenizer.decode(pair.rejected_ids) == rejected[:12]


def one_by_one(model, pair: TokenizedPair) -> tuple[float, float]:
    """Independent oracle: each sequence alone, unbatched; sum of log p(x_t | x_<t) over its completion
    targets (t >= 1: with an empty prompt the first completion token has nothing to be predicted from)."""
    sums = []
    for completion in (pair.chosen_ids, pair.rejected_ids):
        ids = torch.tensor([pair.prompt_ids + completion])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)  # (T, V)
        start = max(len(pair.prompt_ids), 1)
        sums.append(sum(float(logp[t - 1, ids[0, t]]) for t in range(start, ids.shape[1])))
    return sums[0], sums[1]


@pytest.fixture(scope="module")
def model():
    from lit_align.models import TinyModel

    return TinyModel(hidden_size=32, num_layers=2, num_heads=2, seed=0).load_model().eval()


EMPTY_PROMPT_PAIRS = [
    TokenizedPair([], [40, 41, 42], [50, 51], index=0),  # empty prompt, chosen and rejected of other lengths
    TokenizedPair([10, 11, 12], [20, 21], [30, 31, 32, 33], index=1),
    TokenizedPair([], [60, 61], [70, 71, 72, 73, 74], index=2),
]


@pytest.mark.parametrize("collator", [PairCollator(0, 1), PackedPairCollator(0, 1), SharedPromptCollator(0, 1), SharedPromptCollator(0, 8)],
                         ids=["padded", "packed", "shared", "shared-pad8"])
@pytest.mark.parametrize("order", [[0, 1, 2], [1, 2, 0], [2]], ids=["first", "last", "alone"])
def test_empty_prompts_score_chosen_and_rejected_as_themselves(model, collator, order):
    """Each layout, with empty-prompt pairs first, last or alone in the batch, gives every pair's chosen and
    rejected sums (and token counts) of the sequences scored one by one; a swap or a mix-up across
    pairs is seen because all sums differ."""
    batch_pairs = [EMPTY_PROMPT_PAIRS[i] for i in order]
    with torch.no_grad():
        out = sequence_logps(model, collator(batch_pairs), chunk_size=3)
    expected = torch.tensor([one_by_one(model, p) for p in batch_pairs], dtype=torch.float64)  # (B, 2)
    assert len(set(expected.flatten().round(decimals=4).tolist())) == expected.numel()  # all distinct
    torch.testing.assert_close(torch.stack([out.chosen, out.rejected], -1).double(), expected, rtol=0, atol=1e-4)
    counts = [[len(p.chosen_ids) - (not p.prompt_ids), len(p.rejected_ids) - (not p.prompt_ids)] for p in batch_pairs]
    assert torch.stack([out.chosen_tokens, out.rejected_tokens], -1).tolist() == counts
