"""The chunked log-prob pass equals a naive per-token loop over full logits."""

from __future__ import annotations

import pytest
import torch

from lit_align.batch import LogpsRequest, PreferenceBatch
from lit_align.logprobs import chunked_logps, final_logits, hidden_states, sequence_logps


def make_batch(pairs: list[tuple[list[int], list[int], list[int]]], pad: int = 0, length: int | None = None) -> PreferenceBatch:
    """pairs of (prompt, chosen, rejected) ids -> right-padded batch (chosen rows, then rejected)."""
    rows = [p + c for p, c, _ in pairs] + [p + r for p, _, r in pairs]
    prompts = [len(p) for p, _, _ in pairs] * 2
    T = length or max(map(len, rows))
    ids = torch.full((len(rows), T), pad)
    attn = torch.zeros((len(rows), T), dtype=torch.long)
    comp = torch.zeros((len(rows), T), dtype=torch.long)
    for i, (row, p) in enumerate(zip(rows, prompts)):
        ids[i, : len(row)] = torch.tensor(row)
        attn[i, : len(row)] = 1
        comp[i, p : len(row)] = 1
    return PreferenceBatch(ids, attn, comp, torch.arange(len(pairs)))


def naive_logps(model, batch: PreferenceBatch) -> torch.Tensor:
    """Full fp32 logits, then a Python loop over every scored token: the obviously-correct version."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    out = torch.zeros(batch.input_ids.shape[0])
    for row in range(batch.input_ids.shape[0]):
        for t in range(1, batch.input_ids.shape[1]):
            if batch.completion_mask[row, t]:
                out[row] += torch.log_softmax(logits[row, t - 1], -1)[batch.input_ids[row, t]]
    return out


@pytest.fixture
def model(tiny_source):
    return tiny_source.load_model().eval()


@pytest.fixture
def batch():
    # different prompt lengths, completion lengths and padding in every row
    return make_batch(
        [([5, 6, 7], [8, 9], [10, 11, 12, 13]), ([20], [21, 22, 23, 24, 25], [26]), ([30, 31, 32, 33, 34], [35], [36, 37])],
        pad=257,
        length=12,
    )


@pytest.mark.parametrize("chunk", [1, 3, 4, 100, None])
def test_chunked_equals_naive_loop(model, batch, chunk):
    got = sequence_logps(model, batch, chunk_size=chunk)
    want = naive_logps(model, batch)
    torch.testing.assert_close(torch.cat([got.chosen, got.rejected]), want, atol=1e-5, rtol=1e-5)
    assert got.chosen_tokens.tolist() == [2, 5, 1] and got.rejected_tokens.tolist() == [4, 1, 2]


def test_padding_and_prompt_tokens_do_not_count(model, batch):
    """Changing pad ids and the padded length must not change the sums (the 1-layer model)."""
    base = sequence_logps(model, batch)
    repadded = make_batch([([5, 6, 7], [8, 9], [10, 11, 12, 13]), ([20], [21, 22, 23, 24, 25], [26]),
                           ([30, 31, 32, 33, 34], [35], [36, 37])], pad=3, length=16)
    other = sequence_logps(model, repadded)
    torch.testing.assert_close(other.chosen, base.chosen, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(other.rejected, base.rejected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [2, None])
def test_prompt_targets_do_not_count(chunk):
    """A bigram model (no decoder layer: the logits at t depend on token t alone), so the completion's
    conditionals depend on the prompt only through its LAST token. Changing every other prompt token
    changes the prompt targets' log-probs, never the sums; changing the last one must change them
    (the first completion target is predicted from it), so the comparison can see a change."""
    from lit_align.models import TinyModel

    bigram = TinyModel(hidden_size=32, num_layers=1, num_heads=2, seed=0).load_model().eval()
    bigram.model.layers = torch.nn.ModuleList()  # (TinyModel refuses num_layers 0 as a setting)
    bigram.config.num_hidden_layers = 0
    rows = [([5, 6, 7], [8, 9], [10, 11, 12, 13]), ([20, 21], [21, 22, 23, 24, 25], [26]), ([30, 31, 32, 33, 34], [35], [36, 37])]
    base = sequence_logps(bigram, make_batch(rows, pad=257), chunk_size=chunk)
    reprompted = [([p + 100 for p in prompt[:-1]] + prompt[-1:], c, r) for prompt, c, r in rows]
    other = sequence_logps(bigram, make_batch(reprompted, pad=257), chunk_size=chunk)
    torch.testing.assert_close(other.chosen, base.chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(other.rejected, base.rejected, atol=1e-5, rtol=0)
    last_changed = [(prompt[:-1] + [prompt[-1] + 100], c, r) for prompt, c, r in rows]
    moved = sequence_logps(bigram, make_batch(last_changed, pad=257), chunk_size=chunk)
    assert ((moved.chosen - base.chosen).abs() > 1e-3).all() and ((moved.rejected - base.rejected).abs() > 1e-3).all()


@pytest.mark.parametrize("chunk", [2, None])
def test_gradients_match_the_unchunked_computation(tiny_source, batch, chunk):
    a, b = tiny_source.load_model(), tiny_source.load_model()
    sequence_logps(a, batch, chunk_size=chunk).chosen.sum().backward()
    naive_logps(b, batch)[:3].sum().backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_model_gives_fp32_logps(tiny_source, batch):
    model = tiny_source.load_model(dtype="bfloat16").eval()
    got = sequence_logps(model, batch, chunk_size=4)
    assert got.chosen.dtype == torch.float32
    reference = naive_logps(tiny_source.load_model().eval(), batch)
    torch.testing.assert_close(torch.cat([got.chosen, got.rejected]), reference, atol=0.15, rtol=0.05)


def test_extras_are_computed_in_the_same_pass(model, batch):
    """WPO's statistic: mean over completion tokens of log sum_v p_v^2, checked against full logits."""
    got = sequence_logps(model, batch, LogpsRequest(token_logps=True, sum_sq_probs=True), chunk_size=3)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    lss = torch.logsumexp(2 * torch.log_softmax(logits, -1), -1)[:, :-1]  # (2B, T-1)
    mask = batch.completion_mask[:, 1:].bool()
    want = (lss * mask).sum(-1) / mask.sum(-1)
    torch.testing.assert_close(got.mean_log_sum_sq_probs, want, atol=1e-5, rtol=1e-5)
    assert got.token_logps.shape == (6, 11)
    torch.testing.assert_close(got.token_logps.sum(-1), torch.cat([got.chosen, got.rejected]))


def test_full_logits_tensor_is_never_built(model, batch):
    """The lm_head only ever sees chunk-sized slices, and only positions whose target is scored:
    prompt and padding positions never reach it. (The once-per-model check of the head against the
    model's own logits runs first: it forwards a 7-token probe, not the batch.)"""
    final_logits(model)
    seen = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda mod, inp, out: seen.append(out.shape[0]))
    hidden, head = hidden_states(model, batch)
    chunked_logps(hidden, head, batch, chunk_size=4)
    handle.remove()
    assert max(seen) <= 4
    scored = int(batch.completion_mask[:, 1:].sum())
    assert sum(seen) == scored < batch.input_ids[:, 1:].numel()
