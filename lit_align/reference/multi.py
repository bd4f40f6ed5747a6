"""Multi-reference preference optimisation (MRPO, Le et al. 2024, arXiv 2405.16388).

K frozen references (paths and/or the policy's start) are combined per sequence into one reference
log-prob that any reference-taking loss uses in place of ``log q``:
``log q = -logsumexp_k(log w_k - l_k)``, i.e. ``1/q = sum_k w_k / p_k`` (a weighted harmonic mean).
The math lives in ``lit_align.reference_math`` (pure functions, shared with the loss tests).
"""

from __future__ import annotations

import torch
from torch import nn

from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.logprobs import sequence_logps
from lit_align.models import ModelSource
from lit_align.reference.base import ReferenceContext, ReferenceStrategy
from lit_align.reference.frozen import build_reference_model
from lit_align.reference_math import mrpo_two_reference, multi_reference_logq


class _ReferenceEnsemble(ReferenceStrategy):
    """Frozen models (``self.ensemble[k]`` built from ``sources[k]``) scored together; subclasses combine them."""

    provides_logits = False  # the combined q is a sequence-level quantity, with no logits to mix
    provides_token_logps = False  # nor per-token values: the combination is over sequence sums

    def __init__(self, sources: list[ModelSource | None], dtype: str | None) -> None:
        super().__init__()
        self.sources = list(sources)
        self.dtype = dtype
        self.ensemble = nn.ModuleList()
        self.last: dict[str, float] = {}

    def configure(self, policy: nn.Module, context: ReferenceContext) -> None:
        super().configure(policy, context)
        for source in self.sources[len(self.ensemble) :]:
            self.ensemble.append(build_reference_model(policy, source, self.dtype))

    def reference_models(self) -> list[nn.Module]:
        return list(self.ensemble)

    @torch.no_grad()
    def each(self, batch: PreferenceBatch) -> list[SequenceLogps]:
        return [sequence_logps(model, batch, LogpsRequest(), self.chunk_size) for model in self.ensemble]

    @torch.no_grad()
    def logps(self, policy: nn.Module, batch: PreferenceBatch, request: LogpsRequest) -> SequenceLogps:
        return self.combine(self.each(batch))

    def combine(self, per_reference: list[SequenceLogps]) -> SequenceLogps:
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        return dict(self.last)


class MultiReference(_ReferenceEnsemble):
    """K references combined by ``log q = -logsumexp_k(log w_k - l_k)`` with fixed or adaptive weights.

    Adaptive weights are per pair ``w_k proportional to 1 / (|l_kw - l_kl| + 1e-6)``; for K = 2 this is MRPO's
    adaptive ``a`` in the harmonic-mean form (``reference_math.mrpo_two_reference``: the weight of a
    reference grows with the OTHER reference's margin). No clipping (see ``MRPOReference`` for that).
    """

    def __init__(
        self, sources: list[ModelSource | None] | None = None, weights: list[float] | None = None, adaptive: bool = False, dtype: str | None = None
    ) -> None:
        """
        Args:
            sources: ModelSources of the references; an entry ``null`` is the policy's starting weights.
            weights: Fixed weights, one per source (normalised to sum 1); default equal.
            adaptive: Per-pair weights ``w_k`` proportional to ``1 / (|l_kw - l_kl| + 1e-6)`` (MRPO's adaptive weight for
                K = 2) instead of fixed ones.
            dtype: Dtype of the reference weights (default: the policy's).
        """
        sources = list(sources) if sources else [None]
        super().__init__(sources, dtype)
        if adaptive and weights is not None:
            raise ConfigError("give either fixed weights or adaptive: true, not both")
        if weights is not None and (len(weights) != len(sources) or any(w <= 0 for w in weights)):
            raise ConfigError(f"weights must be {len(sources)} positive numbers (one per source), got {weights}")
        self.weights = weights
        self.adaptive = adaptive

    def log_weights(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        """(K, B) log weights (each column sums to 1 in probability)."""
        if self.adaptive:
            inverse = 1.0 / ((chosen - rejected).abs() + 1e-6)  # (K, B)
            return torch.log(inverse / inverse.sum(0, keepdim=True))
        w = torch.tensor(self.weights or [1.0] * len(self.sources), dtype=chosen.dtype, device=chosen.device)
        return torch.log(w / w.sum())[:, None].expand_as(chosen)

    def combine(self, per_reference: list[SequenceLogps]) -> SequenceLogps:
        chosen = torch.stack([r.chosen for r in per_reference]).double()  # (K, B), float64: logsumexp of large values
        rejected = torch.stack([r.rejected for r in per_reference]).double()
        log_w = self.log_weights(chosen, rejected)
        self.last = {f"ref/weight_{k}": float(log_w[k].exp().mean()) for k in range(len(per_reference))}
        first = per_reference[0]
        return SequenceLogps(
            multi_reference_logq(chosen, log_w).to(first.chosen.dtype),
            multi_reference_logq(rejected, log_w).to(first.chosen.dtype),
            first.chosen_tokens, first.rejected_tokens,
        )


class MRPOReference(_ReferenceEnsemble):
    """The paper's two-reference mode: ``source`` (reference 1) and the policy's start (reference 2).

    Per pair: adaptive weight ``a`` (or a fixed ``weight``), reference 1 clipped to a band of
    relative width ``eta`` around reference 2, then the weighted harmonic mean
    (``reference_math.mrpo_two_reference``; worked example from MRPO's formulas, Le et al. 2024,
    arXiv 2405.16388: l1 (-10, -14), l2 (-12, -13), eta 0.1 -> a 0.8, log q (-11.913017, -13.190108)).
    """

    def __init__(self, source: ModelSource | None = None, eta: float = 0.1, weight: float | None = None, dtype: str | None = None) -> None:
        """
        Args:
            source: Reference 1 (another model with the policy's tokenizer; null: the policy's start as well).
            eta: Clipping band: reference 1 stays within relative distance eta of reference 2 (0.1 in the
                paper).
            weight: Fixed weight ``a`` in [0, 1]; null (default): the paper's adaptive per-pair
                ``a = |l1w - l1l| / (|l1w - l1l| + |l2w - l2l| + 1e-6)``.
            dtype: Dtype of both reference models (default: the policy's).
        """
        super().__init__([source, None], dtype)
        if eta < 0:
            raise ConfigError(f"eta must be >= 0, got {eta}")
        if weight is not None and not 0.0 <= weight <= 1.0:
            raise ConfigError(f"weight must be in [0, 1] (or null for adaptive), got {weight}")
        self.source = source
        self.eta = eta
        self.weight = weight

    def combine(self, per_reference: list[SequenceLogps]) -> SequenceLogps:
        ref1, ref2 = per_reference
        args = [t.double() for t in (ref1.chosen, ref1.rejected, ref2.chosen, ref2.rejected)]
        logq_w, logq_l = mrpo_two_reference(*args, eta=self.eta, weight=self.weight)
        if self.weight is None:
            m1, m2 = (args[0] - args[1]).abs(), (args[2] - args[3]).abs()
            self.last = {"ref/mrpo_weight": float((m1 / (m1 + m2 + 1e-6)).mean())}
        else:
            self.last = {"ref/mrpo_weight": float(self.weight)}
        dtype = ref1.chosen.dtype
        return SequenceLogps(logq_w.to(dtype), logq_l.to(dtype), ref1.chosen_tokens, ref1.rejected_tokens)
