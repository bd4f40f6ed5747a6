"""Pure functions that combine reference log-probs (MRPO), shared by the reference strategy and tests.

MRPO, Le et al. 2024 (Multi-Reference Preference Optimization, arXiv 2405.16388; official code
thaihungle/MRPO with K = 2). All inputs are reference log-probs (no grad); outputs are the combined
reference log-probs that DPO then uses in place of ``log q``.
"""

from __future__ import annotations


import torch
from torch import Tensor


def multi_reference_logq(logps: Tensor, log_weights: Tensor) -> Tensor:
    """Weighted harmonic mean of K reference probabilities, in log space.

    ``1/q = sum_k w_k / p_k``, i.e. ``log q = -logsumexp_k(log w_k - l_k)``. ``logps`` and
    ``log_weights`` are (K, ...) and broadcast against each other; the weights should sum to 1.
    """
    return -torch.logsumexp(log_weights - logps, dim=0)


def mrpo_adaptive_weight(l1w: Tensor, l1l: Tensor, l2w: Tensor, l2l: Tensor) -> Tensor:
    """``a = |l1w - l1l| / (|l1w - l1l| + |l2w - l2l| + 1e-6)``: trust reference 1 more where it separates the pair more."""
    m1, m2 = (l1w - l1l).abs(), (l2w - l2l).abs()
    return m1 / (m1 + m2 + 1e-6)


def mrpo_clip(l1: Tensor, l2: Tensor, eta: Tensor | float) -> Tensor:
    """Clip reference 1's log-probs to ``[l2 (1 + eta), l2 (1 - eta)]`` (log-probs are <= 0, so that is a band around l2)."""
    return torch.minimum(torch.maximum(l1, l2 * (1 + eta)), l2 * (1 - eta))


def mrpo_two_reference(
    l1w: Tensor, l1l: Tensor, l2w: Tensor, l2l: Tensor, eta: float = 0.1, weight: float | None = None
) -> tuple[Tensor, Tensor]:
    """MRPO's combined reference ``(log q_w, log q_l)`` for references 1 (an extra model) and 2 (the policy's start).

    Per pair (all (B,)):

    - ``a``: :func:`mrpo_adaptive_weight`, or the fixed ``weight``;
    - ``bw = (l1w + l2w)/2``, ``bl = (l1l + l2l)/2``, ``s = |bw| / (|bw| + |bl|)``,
      ``eta_w = eta s``, ``eta_l = eta (1 - s)``; ``l1c = clip(l1, l2, eta_y)`` (:func:`mrpo_clip`);
    - ``log q = l1c + l2 - log(a e^l1c + (1 - a) e^l2)``.

    The last line is :func:`multi_reference_logq` with weight ``1 - a`` on reference 1 and ``a`` on
    reference 2 (``1/q = (1-a)/p1 + a/p2``): in the harmonic-mean form the official code's ``a``
    multiplies the other reference. Worked example (by hand from the formulas above, MRPO, Le et al.
    2024, arXiv 2405.16388): l1w -10, l1l -14, l2w -12, l2l -13, eta 0.1 -> a 0.8, log q_w -11.913017,
    log q_l -13.190108.
    """
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if weight is not None and not 0 <= weight <= 1:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    a = mrpo_adaptive_weight(l1w, l1l, l2w, l2l) if weight is None else torch.full_like(l1w, float(weight))
    bw, bl = (l1w + l2w) / 2, (l1l + l2l) / 2
    s = bw.abs() / (bw.abs() + bl.abs()).clamp(min=1e-12)
    l1cw, l1cl = mrpo_clip(l1w, l2w, eta * s), mrpo_clip(l1l, l2l, eta * (1 - s))
    log_weights = torch.stack([torch.log1p(-a), torch.log(a)])  # (2, B): reference 1, reference 2
    logq_w = multi_reference_logq(torch.stack([l1cw, l2w]), log_weights)
    logq_l = multi_reference_logq(torch.stack([l1cl, l2l]), log_weights)
    return logq_w, logq_l


__all__ = ["mrpo_adaptive_weight", "mrpo_clip", "mrpo_two_reference", "multi_reference_logq"]
