"""Packed and prompt-shared collations give the padded layout's per-sequence log-probs, loss and gradients."""

from __future__ import annotations

import pytest
import torch

from lit_align.batch import LogpsRequest
from lit_align.data.collate import PairCollator
from lit_align.data.packing import PackedPairCollator, SharedPromptCollator
from lit_align.data.tokenize import TokenizedPair
from lit_align.logprobs import sequence_logps
from lit_align.losses import DPO

ATOL = 1e-5  # fp32: the same arithmetic per token, only other summation orders and masked columns


def pairs(seed: int = 0, n: int = 5) -> list[TokenizedPair]:
    g = torch.Generator().manual_seed(seed)

    def ids(lo: int, hi: int) -> list[int]:
        return torch.randint(3, 250, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()

    return [TokenizedPair(ids(1, 12), ids(1, 9), ids(1, 9), index=i) for i in range(n)]


@pytest.fixture(scope="module")
def model():
    from lit_align.models import TinyModel

    return TinyModel(hidden_size=32, num_layers=2, num_heads=2, seed=0).load_model()


def logps_and_grads(model, collator, batch_pairs, chunk: int = 5):
    model.zero_grad()
    batch = collator(batch_pairs)
    out = sequence_logps(model, batch, LogpsRequest(sum_sq_probs=True), chunk_size=chunk)
    ref = sequence_logps(model, PairCollator(0, 1)(batch_pairs), chunk_size=chunk)  # a fixed reference
    ref.chosen, ref.rejected = ref.chosen.detach() + 0.3, ref.rejected.detach() - 0.2
    loss = DPO(beta=0.1)(out, ref, batch).losses.mean()
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    return out, loss.detach(), grads, batch


@pytest.mark.parametrize("collator", [PackedPairCollator(0, 1), SharedPromptCollator(0, 1), SharedPromptCollator(0, 8)],
                         ids=["packed", "shared", "shared-pad8"])
def test_same_logps_loss_and_gradients_as_padded(model, collator):
    batch_pairs = pairs()
    padded, padded_loss, padded_grads, padded_batch = logps_and_grads(model, PairCollator(0, 1), batch_pairs)
    packed, loss, grads, batch = logps_and_grads(model, collator, batch_pairs)
    assert batch.packed and batch.input_ids.shape[0] < padded_batch.input_ids.shape[0]  # fewer rows
    for name in ("chosen", "rejected", "mean_log_sum_sq_probs"):
        torch.testing.assert_close(getattr(packed, name), getattr(padded, name), rtol=0, atol=ATOL)
    assert torch.equal(packed.chosen_tokens, padded.chosen_tokens) and torch.equal(packed.rejected_tokens, padded.rejected_tokens)
    torch.testing.assert_close(loss, padded_loss, rtol=0, atol=ATOL)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, padded_grads[name], rtol=0, atol=ATOL, msg=name)


def test_shared_prompt_row_layout():
    p = TokenizedPair([10, 11, 12], [20, 21], [30], index=0)
    batch = SharedPromptCollator(0, 1)([p])
    assert batch.input_ids.tolist() == [[10, 11, 12, 20, 21, 12, 30]]  # last prompt token heads each branch
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 2, 3]]
    assert batch.seq_ids.tolist() == [[-1, -1, -1, 0, 0, -1, 1]]
    mask = batch.block_mask[0, 0]
    assert not mask[5, 2] and not mask[6, 3] and not mask[6, 4]  # rejected branch sees neither p (chosen's) nor chosen
    assert mask[6, 0] and mask[6, 1] and mask[6, 5] and mask[4, 2]


def test_packed_rows_never_longer_than_the_longest_sequence():
    batch_pairs = pairs(seed=1, n=8)
    batch = PackedPairCollator(0, 1)(batch_pairs)
    longest = max(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in batch_pairs)
    assert batch.input_ids.shape[1] == longest
    assert int(batch.attention_mask.sum()) == sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in batch_pairs)
