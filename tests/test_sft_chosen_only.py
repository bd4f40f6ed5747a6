"""SFT alone forwards the chosen rows only; its loss and gradients are those of the full batch."""

from __future__ import annotations

import math

import pytest
import torch

from lit_align import losses as L
from lit_align.logprobs import sequence_logps


def first_batch(source, path, batch_size: int):
    from lit_align.data import PreferenceDataModule

    tokenizer = path.parent / "tokenizer"
    source.load_tokenizer().save_pretrained(tokenizer)
    data = PreferenceDataModule(train_path=str(path), batch_size=batch_size, tokenizer=str(tokenizer))
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def rows_seen(module) -> list[int]:
    """Batch sizes seen by the policy's embedding layer during the calls that follow."""
    seen: list[int] = []
    module.policy.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    return seen


def test_sft_forwards_chosen_rows_only_with_the_same_loss_and_gradients(tiny_source, sort_task):
    """Expected loss from a full 2B-row forward: the mean over pairs of -log p(y_w | x) / |y_w|."""
    from lit_align.module import PreferenceModule
    from lit_align.reference import NoReference

    module = PreferenceModule(model=tiny_source, loss=L.SFT(), reference=NoReference())
    module.configure_model()
    batch = first_batch(tiny_source, sort_task["train"], 6)
    seen = rows_seen(module)
    policy, _, out = module.forward_step(batch)
    assert seen == [batch.num_pairs]  # not 2B
    assert torch.isnan(policy.rejected).all() and (policy.rejected_tokens == 0).all()
    metrics = module.step_metrics(policy, None, out)
    assert "logps/rejected" not in metrics and all(math.isfinite(float(v)) for v in metrics.values())
    out.losses.mean().backward()
    grads = [p.grad.clone() for p in module.policy.parameters()]
    module.policy.zero_grad()

    full = sequence_logps(module.policy, batch)  # every row, as before
    expected = (-full.chosen / full.chosen_tokens).mean()
    expected.backward()
    assert float(out.losses.mean()) == pytest.approx(float(expected), abs=1e-6)
    for got, want in zip(grads, (p.grad for p in module.policy.parameters())):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_a_loss_reading_rejected_gets_both_halves_and_chosen_only_logps_are_loud(tiny_source, sort_task):
    from lit_align.module import PreferenceModule
    from lit_align.reference import NoReference

    module = PreferenceModule(model=tiny_source, loss=L.WeightedLoss([L.SFT(), L.SimPO()]), reference=NoReference())
    module.configure_model()
    batch = first_batch(tiny_source, sort_task["train"], 3)
    seen = rows_seen(module)
    module.forward_step(batch)
    assert seen == [2 * batch.num_pairs]
    loud = L.SimPO()(sequence_logps(module.policy, batch.chosen_only()), None, batch)
    assert torch.isnan(loud.losses).all()
