"""Model shapes of the benchmark (random init, no hub) and the FLOPs they cost per token.

Presets copy the dimensions of public models into the built-in Llama-shaped ``TinyModel``:
``qwen2.5-0.5b`` (Qwen2.5-0.5B's sizes without its q/k/v biases) and ``llama3.2-1b``. The model's
vocabulary is the real one (151936 / 128256 rows), larger than the byte tokenizer's 259 ids: the
ids above 258 never occur, but the embedding and lm_head cost what they cost in the real model.

FLOPs convention (PaLM, Chowdhery et al. 2022, appendix B): every parameter that takes part in a
matmul counts, embeddings included: 6N per trained token (forward 2N, backward 4N) and 2N more for
a live reference's forward, so 8N with a live reference and 6N with a cached one. N is the real
parameter count (tied embeddings counted once: the shared matrix is the lm_head's matmul). An
untied input embedding is a table lookup, not a matmul, so ``flops_params`` leaves it out; the
presets are all tied, where N = ``params()``. Kaplan et al.'s 6N counts non-embedding parameters
only; with a 151936 x 896 head (136 M of Qwen2.5-0.5B's 494 M) that would ignore a real matmul.
Attention's score and value products, which N does not cover, are the optional
``attention_flops``: 12 L d T per trained token and 4 L d T for a reference forward, T the row's
length and d = heads x head_dim (PaLM's 12LHQT, full T x T, no causal halving).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Shape:
    """A Llama-shaped decoder's dimensions."""

    hidden_size: int = 256
    """Model width."""
    num_layers: int = 4
    """Decoder layers."""
    num_heads: int = 4
    """Attention (query) heads."""
    num_kv_heads: int | None = None
    """Key/value heads (grouped-query attention); None: num_heads."""
    intermediate_size: int = 1024
    """MLP width."""
    vocab_size: int | None = None
    """Embedding rows; None: the byte tokenizer's 259."""
    tie_embeddings: bool = True
    """lm_head shares the input embedding."""
    rope_theta: float = 10000.0
    """Rotary embedding base."""

    @property
    def vocab(self) -> int:
        from lit_align.models.tiny_tokenizer import VOCAB_SIZE

        return self.vocab_size or VOCAB_SIZE

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    def params(self) -> int:
        """The built model's parameter count (tied embeddings once), as ``sum(p.numel())``."""
        h, f, v = self.hidden_size, self.intermediate_size, self.vocab
        q = self.num_heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        attention = h * q + 2 * h * kv + q * h  # q, k, v, o projections (no biases)
        layer = attention + 3 * h * f + 2 * h  # gate, up, down; two RMSNorm weights
        return v * h * (1 if self.tie_embeddings else 2) + self.num_layers * layer + h  # + final norm

    def flops_params(self) -> int:
        """N of the 6N / 8N count: ``params()`` less an untied input embedding (a lookup, not a matmul)."""
        return self.params() - (0 if self.tie_embeddings else self.vocab * self.hidden_size)

    def model_flops(self, tokens: float, live: bool) -> float:
        """8N (live reference) or 6N (cached) FLOPs per token, times ``tokens``."""
        return (8 if live else 6) * self.flops_params() * tokens

    def attention_flops(self, sum_sq_lengths: float, live: bool) -> float:
        """Score and value products over rows of lengths T_i: (12 + 4 live) L d sum_i T_i^2."""
        return (16 if live else 12) * self.num_layers * self.num_heads * self.head_dim * sum_sq_lengths

    def tiny_kwargs(self) -> dict:
        """Keyword arguments of ``lit_align.models.TinyModel`` / ``save_tiny``."""
        return dict(hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads,
                    num_key_value_heads=self.num_kv_heads, intermediate_size=self.intermediate_size,
                    vocab_size=self.vocab_size, tie_word_embeddings=self.tie_embeddings, rope_theta=self.rope_theta)

    def describe(self) -> str:
        kv = f" ({self.kv_heads} KV)" if self.kv_heads != self.num_heads else ""
        return (f"hidden {self.hidden_size}, {self.num_layers} layers, {self.num_heads} heads{kv}, MLP "
                f"{self.intermediate_size}, vocab {self.vocab}{', tied' if self.tie_embeddings else ', untied'}, "
                f"rope theta {self.rope_theta:g}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    """A shape and how many padded positions one step should hold on the device it was sized for."""

    shape: Shape
    """Model dimensions."""
    step_positions: int | None = None
    """Pairs per step at ``--seq-len L`` = step_positions // (2 L) (chosen and rejected rows of about L
    positions each); None: ``pairs`` pairs (the CPU default workload)."""
    pairs: int = 8
    """Pairs per step of the mixed-length workload."""
    numbers: tuple[int, int] = (10, 60)
    """Numbers per prompt of the mixed-length workload (rows of about 6 to 6 x hi tokens)."""
    real: bool = False
    """The real pretrained SmolLM2-135M-Instruct (``lit_align.models.SmolLM2``: its weights and its tokenizer),
    not a random init of the shape; the shape then only describes it (and gives the FLOPs)."""

    def batch_size(self, seq_len: int | None) -> int:
        if seq_len is None or self.step_positions is None:
            return self.pairs
        return max(1, self.step_positions // (2 * seq_len))

    def reduced(self, num_layers: int | None) -> Preset:
        """The same preset with fewer layers (smoke runs)."""
        if num_layers is not None and self.real:
            raise SystemExit("--layers applies to random-init presets, not to a real model")
        return self if num_layers is None else replace(self, shape=replace(self.shape, num_layers=num_layers))


PRESETS: dict[str, Preset] = {
    "tiny": Preset(Shape()),
    # 16384 positions per step: about 33 GB of bf16-autocast activations without checkpointing (HF Llama,
    # about 84 KB per token and layer at this width) next to 10 GB of weights, grads, Adam and reference.
    "qwen2.5-0.5b": Preset(Shape(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864,
                                 vocab_size=151936, tie_embeddings=True, rope_theta=1e6), step_positions=16384),
    # 8192 positions per step: about 22 GB of activations (about 170 KB per token and layer) next to
    # 25 GB of fp32 weights, grads, Adam moments and reference copy, on an 80 GB H100.
    "llama3.2-1b": Preset(Shape(hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=8, intermediate_size=8192,
                                vocab_size=128256, tie_embeddings=True, rope_theta=5e5), step_positions=8192),
    # SmolLM2-135M-Instruct (Allal et al. 2025), real weights: a 49152-row head is a fifth of its 134.5 M
    # parameters. Short rows (prompts of 3 to 10 numbers, 20 to 65 tokens) and 4 pairs per step keep a
    # step within seconds on two CPU cores.
    "smollm2": Preset(Shape(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536,
                            vocab_size=49152, tie_embeddings=True, rope_theta=1e5), pairs=4, numbers=(3, 10), real=True),
}
"""``--preset`` choices."""
