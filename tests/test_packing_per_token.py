"""Per-token requests on packed layouts: the padded layout's per-token log-probs, token-level losses,
epsilon-DPO mixes and reference token counts, for both packing collators.

The padded layout (PairCollator) is the independent reference: its rows are the sequences, so every
per-sequence quantity there needs no ``seq_ids`` bookkeeping at all.
"""

from __future__ import annotations


import pytest
import torch

from tests.conftest import quiet_trainer
from tests.test_packing import pairs
from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.data.collate import PairCollator
from lit_align.data.packing import PackedPairCollator, SharedPromptCollator
from lit_align.data.tokenize import TokenizedPair
from lit_align.logprobs import chunked_logps, hidden_states, sequence_logps
from lit_align.losses import DPO, AOTUnpaired, EpsilonDPO, LengthDesensitized, PreferenceLoss
from lit_align.reference import CachedReference, DatasetColumnReference
from lit_align.reference.cached import completion_counts

ATOL = 1e-5  # fp32: the same arithmetic per token, only other summation orders and masked columns
PADDED = PairCollator(0, 1)
COLLATORS = [PackedPairCollator(0, 1), SharedPromptCollator(0, 1), SharedPromptCollator(0, 8)]
IDS = ["packed", "shared", "shared-pad8"]


def tiny(seed: int):
    from lit_align.models import TinyModel

    return TinyModel(hidden_size=32, num_layers=2, num_heads=2, seed=seed).load_model()


@pytest.fixture(scope="module")
def policy():
    return tiny(0)


@pytest.fixture(scope="module")
def reference():
    return tiny(1).eval().requires_grad_(False)  # another model, so policy and reference differ


def per_sequence_tokens(out: SequenceLogps) -> list[torch.Tensor]:
    """Each sequence's completion-target log-probs in order: what the layout contract promises."""
    return [row[mask] for row, mask in zip(out.token_logps, out.token_mask)]


@pytest.mark.parametrize("collator", COLLATORS, ids=IDS)
def test_per_token_logps_equal_the_padded_layout(policy, collator):
    batch_pairs = pairs(seed=2, n=6)
    request = LogpsRequest(token_logps=True)
    with torch.no_grad():
        padded = sequence_logps(policy, PADDED(batch_pairs), request, chunk_size=4)
        packed = sequence_logps(policy, collator(batch_pairs), request, chunk_size=4)
    lengths = [len(p.chosen_ids) for p in batch_pairs] + [len(p.rejected_ids) for p in batch_pairs]
    assert packed.token_logps.shape == packed.token_mask.shape == (12, max(lengths))  # (2B, longest completion)
    assert packed.token_mask.sum(-1).tolist() == padded.token_mask.sum(-1).tolist() == lengths
    for got, want in zip(per_sequence_tokens(packed), per_sequence_tokens(padded)):
        torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    # what LD-DPO reads: the 1-based index of each target within its completion, and row sums
    for out in (packed, padded):
        numbered = torch.cumsum(out.token_mask.long(), -1)[out.token_mask]  # (S,) row after row
        assert numbered.tolist() == [k for n in lengths for k in range(1, n + 1)]
        assert not out.token_logps[~out.token_mask].any()  # exactly zero outside the completion
    torch.testing.assert_close(packed.token_logps.sum(-1), torch.cat([padded.chosen, padded.rejected]), rtol=0, atol=ATOL)
    # packed rows are left-aligned: sequence s's k-th target sits in column k-1
    columns = torch.arange(packed.token_mask.shape[1])
    assert torch.equal(packed.token_mask, columns < torch.tensor(lengths)[:, None])


def step(policy, reference, collator, batch_pairs, loss: PreferenceLoss, chunk: int = 3):
    """One forward/backward as PreferenceModule.forward_step does it; returns logps, loss and grads."""
    policy.zero_grad()
    batch = collator(batch_pairs)
    request = loss.logps_request
    if request.mix_eps is not None:  # both models' logits meet in one chunk loop
        with torch.no_grad():
            ref_hidden, ref_head = hidden_states(reference, batch)
            ref = chunked_logps(ref_hidden, ref_head, batch, LogpsRequest(), chunk)
        hidden, head = hidden_states(policy, batch)
        out = chunked_logps(hidden, head, batch, request, chunk, mix_hidden=ref_hidden, mix_head=ref_head)
    else:
        out = sequence_logps(policy, batch, request, chunk)
        with torch.no_grad():
            ref = sequence_logps(reference, batch, request, chunk)
    value = loss(out, ref, batch).losses.mean()
    value.backward()
    return out, value.detach(), {k: p.grad.clone() for k, p in policy.named_parameters()}


TOKEN_LOSSES = {
    "ld-dpo": lambda: LengthDesensitized(DPO(beta=0.5), alpha=0.3),
    "ld-aot-unpaired-reference-too": lambda: LengthDesensitized(AOTUnpaired(beta=0.5), alpha=0.6, reference_too=True),
    "aot-unpaired": lambda: AOTUnpaired(beta=0.5),
}


@pytest.mark.parametrize("collator", COLLATORS, ids=IDS)
@pytest.mark.parametrize("name", list(TOKEN_LOSSES))
def test_token_level_losses_and_gradients_equal_the_padded_layout(policy, reference, collator, name):
    batch_pairs = pairs(seed=3, n=6)
    assert any(len(p.chosen_ids) != len(p.rejected_ids) for p in batch_pairs)  # LD-DPO's tail weight matters
    _, want, want_grads = step(policy, reference, PADDED, batch_pairs, TOKEN_LOSSES[name]())
    _, got, grads = step(policy, reference, collator, batch_pairs, TOKEN_LOSSES[name]())
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    assert any(g.abs().sum() > 0 for g in grads.values())
    for key, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[key], rtol=0, atol=ATOL, msg=key)


def test_length_desensitized_differs_from_its_wrapped_loss_on_packed_batches(policy, reference):
    """Guards the comparison above: alpha < 1 really reweights the tails on a packed batch."""
    batch_pairs = pairs(seed=3, n=6)
    _, plain, _ = step(policy, reference, PackedPairCollator(0, 1), batch_pairs, DPO(beta=0.5))
    _, desensitized, _ = step(policy, reference, PackedPairCollator(0, 1), batch_pairs, LengthDesensitized(DPO(beta=0.5), alpha=0.3))
    assert abs(float(plain - desensitized)) > 1e-3


@pytest.mark.parametrize("collator", COLLATORS, ids=IDS)
def test_epsilon_dpo_mixes_loss_and_gradients_equal_the_padded_layout(policy, reference, collator):
    batch_pairs = pairs(seed=4, n=6)
    padded, want, want_grads = step(policy, reference, PADDED, batch_pairs, EpsilonDPO(beta=0.1, eps=0.2))
    packed, got, grads = step(policy, reference, collator, batch_pairs, EpsilonDPO(beta=0.1, eps=0.2))
    for name in ("chosen", "rejected", "mixed_minus", "mixed_plus"):
        torch.testing.assert_close(getattr(packed, name).detach(), getattr(padded, name).detach(), rtol=0, atol=ATOL, msg=name)
    # the mixes differ from the plain sums (a large eps), so the comparison above is not vacuous
    assert (packed.mixed_minus - torch.cat([packed.chosen, packed.rejected]).detach()).abs().min() > 1e-4
    assert torch.equal(EpsilonDPO.steps(packed), EpsilonDPO.steps(padded))
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    for key, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[key], rtol=0, atol=ATOL, msg=key)


@pytest.mark.parametrize("collator", COLLATORS, ids=IDS)
def test_stored_references_count_tokens_per_sequence(collator):
    """CachedReference and DatasetColumnReference report each completion's own length, as the padded layout."""
    batch_pairs = [
        TokenizedPair(p.prompt_ids, p.chosen_ids, p.rejected_ids, p.index, ref_logps=(-1.0 - p.index, -2.0 - p.index))
        for p in pairs(seed=5, n=6)
    ]
    chosen = [len(p.chosen_ids) for p in batch_pairs]
    rejected = [len(p.rejected_ids) for p in batch_pairs]
    batch: PreferenceBatch = collator(batch_pairs)
    assert batch.input_ids.shape[0] < 12  # rows hold several sequences: per-row counts would be wrong
    padded_counts = completion_counts(PADDED(batch_pairs))
    assert [c.tolist() for c in padded_counts] == [chosen, rejected]
    assert [c.tolist() for c in completion_counts(batch)] == [chosen, rejected]

    column = DatasetColumnReference().logps(None, batch, LogpsRequest())
    cached = CachedReference()
    cached.tables = {"val": torch.tensor([[-1.0 - i, -2.0 - i] for i in range(6)])}
    stored = cached.eval().logps(None, batch, LogpsRequest())  # eval mode: the val table
    for out in (column, stored):
        assert out.chosen_tokens.tolist() == chosen and out.rejected_tokens.tolist() == rejected
        assert out.chosen.tolist() == [-1.0 - p.index for p in batch_pairs]


def fit_losses(tmp_path, sort_task, loss: PreferenceLoss, collator: type) -> list[float]:
    """Two training steps of a tiny model; the per-step training losses as logged."""
    import lightning as L

    from lit_align.data import PreferenceDataModule
    from lit_align.models import TinyModel
    from lit_align.module import PreferenceModule

    class Record(L.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.losses.append(float(outputs["loss"]))

    L.seed_everything(0, verbose=False)
    record = Record()
    module = PreferenceModule(model=TinyModel(hidden_size=32, num_layers=1, num_heads=2, seed=0), loss=loss, lr=1e-3,
                              warmup_steps=0, schedule="constant")
    data = PreferenceDataModule(train_path=str(sort_task["train"]), batch_size=4, max_length=64, max_prompt_length=32,
                                chat_template=False, collator=collator)
    quiet_trainer(max_steps=2, callbacks=[record], default_root_dir=str(tmp_path), num_sanity_val_steps=0,
                  limit_val_batches=0).fit(module, data)
    return record.losses


@pytest.mark.parametrize("loss", ["ld-dpo", "epsilon-dpo"])
def test_short_packed_fit_follows_the_padded_fit(tmp_path, sort_task, loss):
    make = {"ld-dpo": lambda: LengthDesensitized(DPO(beta=0.1), alpha=0.5), "epsilon-dpo": lambda: EpsilonDPO(beta=0.1, eps=0.01)}[loss]
    padded = fit_losses(tmp_path / "padded", sort_task, make(), PairCollator)
    packed = fit_losses(tmp_path / "packed", sort_task, make(), PackedPairCollator)
    assert len(packed) == 2 and all(torch.isfinite(torch.tensor(packed)))
    assert packed == pytest.approx(padded, abs=1e-5)


@pytest.mark.parametrize("collator", COLLATORS, ids=IDS)
def test_unconditional_scoring_strips_prompts_from_packed_rows(reference, collator):
    """strip_prompts finds each sequence's completion through seq_ids: the stripped batch is the one
    made from the padded layout, so the unconditional reference's log p(y) agrees too."""
    from lit_align.reference.unconditional import strip_prompts

    batch_pairs = pairs(seed=4, n=5)
    padded, packed = strip_prompts(PADDED(batch_pairs), 256), strip_prompts(collator(batch_pairs), 256)
    for name in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(getattr(packed, name), getattr(padded, name)), name
    with torch.no_grad():
        want, got = sequence_logps(reference, padded), sequence_logps(reference, packed)
    torch.testing.assert_close(got.chosen, want.chosen, atol=ATOL, rtol=0)
