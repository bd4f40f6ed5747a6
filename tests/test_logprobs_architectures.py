"""Every causal-LM architecture: the chunked head gives the log-probs of the model's own logits.

The independent reference is ``model(input_ids, attention_mask).logits`` of the right-padded
sequences, log-softmaxed in float64. Each architecture gets a tiny random config with its final-logit
post-processing set to a value that matters (Cohere's ``logit_scale``, Granite's ``logits_scaling``,
Gemma's soft-cap), and is checked for every quantity a loss asks for (plain sums, per-token values,
WPO's ``log sum p^2``, epsilon-DPO's mixed log-probs against a second model of the same architecture)
on the padded layout and both packed layouts. Architectures that cannot honour a packed row must
refuse it with a ValueError instead.
"""

from __future__ import annotations

import pytest
import torch

from lit_align.batch import LogpsRequest
from lit_align.data.collate import PairCollator
from lit_align.data.packing import PackedPairCollator, SharedPromptCollator
from lit_align.data.tokenize import TokenizedPair
from lit_align.logprobs import chunked_logps, hidden_states, sequence_logps

V = 97  # vocabulary of every tiny model (token ids below come from [3, V))
EPS = 0.3  # epsilon-DPO mixing weight: large, so that a missing transform on either model shows
COMMON = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
MOE = dict(num_experts_per_tok=2)

# name -> (config class name, overrides, packed layout supported). Scaling values are far from 1.
ARCHITECTURES = {
    "llama": ("LlamaConfig", dict(num_key_value_heads=2), True),
    "qwen2": ("Qwen2Config", dict(num_key_value_heads=2), True),
    "qwen3": ("Qwen3Config", dict(num_key_value_heads=2, head_dim=8), True),
    "qwen3-moe": ("Qwen3MoeConfig", dict(num_key_value_heads=2, head_dim=8, num_experts=4, moe_intermediate_size=16, **MOE), True),
    "mistral": ("MistralConfig", dict(num_key_value_heads=2, sliding_window=64), True),
    "mistral-window-4": ("MistralConfig", dict(num_key_value_heads=2, sliding_window=4), False),
    "mixtral": ("MixtralConfig", dict(num_key_value_heads=2, num_local_experts=4, **MOE), True),
    "gemma": ("GemmaConfig", dict(num_key_value_heads=2, head_dim=8), True),
    "gemma2": ("Gemma2Config", dict(num_key_value_heads=2, head_dim=8, final_logit_softcapping=0.5,
                                    attn_logit_softcapping=5.0, sliding_window=64), True),
    "gemma3": ("Gemma3TextConfig", dict(num_key_value_heads=2, head_dim=8, final_logit_softcapping=0.5,
                                        sliding_window=64), True),
    "phi2": ("PhiConfig", dict(partial_rotary_factor=0.5), True),  # lm_head has a bias
    "phi3": ("Phi3Config", dict(num_key_value_heads=2), True),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=4, n_positions=64), True),
    "gpt-neox": ("GPTNeoXConfig", dict(rotary_pct=0.5), True),
    "opt": ("OPTConfig", dict(ffn_dim=64, word_embed_proj_dim=32, max_position_embeddings=64), True),
    "falcon": ("FalconConfig", dict(alibi=False), True),
    "falcon-alibi": ("FalconConfig", dict(alibi=True), False),  # ALiBi built from the 2-D mask
    "stablelm": ("StableLmConfig", dict(num_key_value_heads=2), True),
    "olmo2": ("Olmo2Config", dict(num_key_value_heads=2), True),
    "cohere": ("CohereConfig", dict(num_key_value_heads=2, logit_scale=0.25), True),
    "cohere2": ("Cohere2Config", dict(num_key_value_heads=2, logit_scale=0.25, sliding_window=64), True),
    "granite": ("GraniteConfig", dict(num_key_value_heads=2, logits_scaling=0.125), True),
    "granitemoe": ("GraniteMoeConfig", dict(num_key_value_heads=2, logits_scaling=0.125, num_local_experts=4, **MOE), True),
    "hyperclovax": ("HyperCLOVAXConfig", dict(num_key_value_heads=2, logits_scaling=4.0), True),  # multiplies
    "smollm3": ("SmolLM3Config", dict(num_key_value_heads=2), True),
    "deepseek-v3": ("DeepseekV3Config", dict(num_key_value_heads=4, moe_intermediate_size=16, n_routed_experts=4,
                                             n_shared_experts=1, n_group=1, topk_group=1, first_k_dense_replace=1,
                                             kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, v_head_dim=8,
                                             qk_nope_head_dim=8, **MOE), True),
    "gpt-oss": ("GptOssConfig", dict(num_key_value_heads=2, head_dim=8, num_local_experts=4, sliding_window=64, **MOE), True),
}


def build(name: str, seed: int):
    """A tiny random-init model of architecture ``name`` (fp32, eval, eager attention), or a skip."""
    import transformers

    class_name, overrides, _ = ARCHITECTURES[name]
    config_class = getattr(transformers, class_name, None)
    if config_class is None:
        pytest.skip(f"{name}: transformers {transformers.__version__} has no {class_name}")
    torch.manual_seed(seed)
    try:
        config = config_class(**{**COMMON, **overrides})
        config._attn_implementation = "eager"
        model = transformers.AutoModelForCausalLM.from_config(config)
    except Exception as failure:  # noqa: BLE001 - the reason goes into the skip message
        pytest.skip(f"{name}: cannot build offline ({type(failure).__name__}: {failure})")
    with torch.no_grad():  # random init is near-zero for some families: make the logits large
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    return model.eval()


def pairs() -> list[TokenizedPair]:
    """Three pairs with distinct prompt / completion lengths (rows up to 14 tokens)."""
    g = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(3, V, (n,), generator=g).tolist()

    return [TokenizedPair(ids(p), ids(c), ids(r), index=i) for i, (p, c, r) in enumerate([(3, 4, 2), (1, 6, 5), (5, 1, 3)])]


def expected(policy, reference, batch_pairs) -> dict[str, list]:
    """Per sequence (chosen 0..B-1, then rejected), from each model's own ``forward(...).logits``.

    One right-padded forward per model with its attention mask (no lit-align code involved), then
    log-softmax in float64 and a plain loop over each sequence's completion targets.
    """
    sequences = [(p.prompt_ids, p.chosen_ids) for p in batch_pairs] + [(p.prompt_ids, p.rejected_ids) for p in batch_pairs]
    length = max(len(p) + len(c) for p, c in sequences)
    ids = torch.zeros(len(sequences), length, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for row, (prompt, completion) in enumerate(sequences):
        ids[row, : len(prompt) + len(completion)] = torch.tensor(prompt + completion)
        attention[row, : len(prompt) + len(completion)] = 1
    with torch.no_grad():
        f_all = policy(input_ids=ids, attention_mask=attention).logits.double()  # (2B, T, V)
        g_all = reference(input_ids=ids, attention_mask=attention).logits.double()
    out = {"tokens": [], "sums": [], "lss": [], "minus": [], "plus": []}
    for row, (prompt, completion) in enumerate(sequences):
        scored = slice(len(prompt) - 1, len(prompt) + len(completion) - 1)  # positions predicting a completion token
        f, g = f_all[row, scored], g_all[row, scored]  # (n, V)
        targets = torch.tensor(completion)[:, None]  # (n, 1)
        logp = torch.log_softmax(f, -1)
        out["tokens"].append(logp.gather(-1, targets)[:, 0])
        out["sums"].append(out["tokens"][-1].sum())
        out["lss"].append(torch.logsumexp(2 * logp, -1).mean())
        for key, sign in (("minus", -1), ("plus", 1)):
            mix = (1 - sign * EPS) * f + sign * EPS * g
            out[key].append(torch.log_softmax(mix, -1).gather(-1, targets)[:, 0].sum())
    return out


LAYOUTS = {"padded": PairCollator(0, 1), "packed": PackedPairCollator(0, 1), "shared-prompt": SharedPromptCollator(0, 1)}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def models(request):
    policy, reference = build(request.param, seed=0), build(request.param, seed=1)
    batch_pairs = pairs()
    return request.param, policy, reference, batch_pairs, expected(policy, reference, batch_pairs)


def close(got: torch.Tensor, want, what: str) -> None:
    want = torch.stack(want) if isinstance(want, list) else want
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_logps_equal_the_models_own_logits(models, layout):
    name, policy, reference, batch_pairs, want = models
    batch = LAYOUTS[layout](batch_pairs)
    request = LogpsRequest(token_logps=True, sum_sq_probs=True)
    if batch.packed and not ARCHITECTURES[name][2]:
        with pytest.raises(ValueError, match="cannot score a packed layout|sliding window"):
            sequence_logps(policy, batch, request, chunk_size=4)
        return
    with torch.no_grad():
        got = sequence_logps(policy, batch, request, chunk_size=4)  # plain, per-token, WPO
        ref_hidden, ref_head = hidden_states(reference, batch)  # epsilon-DPO, as PreferenceModule.forward_step
        hidden, head = hidden_states(policy, batch)
        mixed = chunked_logps(hidden, head, batch, LogpsRequest(mix_eps=EPS), 4, mix_hidden=ref_hidden, mix_head=ref_head)
    close(torch.cat([got.chosen, got.rejected]), want["sums"], "sums")
    close(torch.cat([mixed.chosen, mixed.rejected]), want["sums"], "sums on the mixing path")
    for s, tokens in enumerate(want["tokens"]):
        close(got.token_logps[s][got.token_mask[s]], tokens, f"token log-probs of sequence {s}")
    close(got.mean_log_sum_sq_probs, want["lss"], "WPO log sum p^2")
    close(mixed.mixed_minus, want["minus"], "(1+eps) f - eps g")
    close(mixed.mixed_plus, want["plus"], "(1-eps) f + eps g")


def tripled_llama():
    """A Llama whose forward multiplies its logits by 3 with no config attribute saying so."""
    import transformers

    class TripledLlama(transformers.LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 3.0
            return out

    torch.manual_seed(0)
    return TripledLlama(transformers.LlamaConfig(**COMMON, num_key_value_heads=2))


def test_a_post_processing_the_head_cannot_repeat_is_refused():
    with pytest.raises(ValueError, match="TripledLlama.*does not reproduce the model's own logits"):
        sequence_logps(tripled_llama(), PairCollator(0, 1)(pairs()))


def test_preference_module_refuses_it_at_setup():
    from lit_align.models import ModelSource
    from lit_align.module import PreferenceModule

    class Source(ModelSource):
        def load_model(self, dtype=None):
            return tripled_llama()

        def identity(self) -> str:
            return "tripled-llama"

        def load_tokenizer(self):
            from lit_align.models.tiny_tokenizer import build_tokenizer

            return build_tokenizer()

    with pytest.raises(ValueError, match="does not reproduce"):
        PreferenceModule(model=Source()).configure_model()  # before any batch
