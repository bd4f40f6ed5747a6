"""LD-DPO length desensitisation: an option that wraps any pairwise loss."""

from __future__ import annotations

from dataclasses import replace

import torch

from lit_align.batch import LogpsRequest, LossOutput, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.losses.base import LossWrapper, PreferenceLoss, check_in_range


def desensitized_sums(logps: SequenceLogps, alpha: float) -> SequenceLogps:
    """``logps`` with chosen / rejected sums in which tokens past the shorter completion weigh ``alpha``.

    Needs ``token_logps`` / ``token_mask`` (2B, L), one row per sequence in any layout (see
    ``SequenceLogps``: only the mask, its order along the row and row sums are used). The public
    length ``l_p = min(|yw|, |yl|)`` is per pair; the k-th completion token (k = 1, 2, ...) counts
    fully when ``k <= l_p``.
    """
    if logps.token_logps is None or logps.token_mask is None:
        raise ConfigError("LengthDesensitized needs per-token log-probs: compute them with its logps_request")
    mask = logps.token_mask  # (2B, L) bool
    position = torch.cumsum(mask.long(), dim=-1)  # (2B, L): 1-based index within the completion
    public = torch.minimum(logps.chosen_tokens, logps.rejected_tokens).repeat(2)  # (2B,) l_p
    front = mask & (position <= public.unsqueeze(-1))
    rear = mask & ~front
    tokens = logps.token_logps
    sums = (tokens * front).sum(-1) + alpha * (tokens * rear).sum(-1)  # (2B,)
    half = sums.shape[0] // 2
    return replace(logps, chosen=sums[:half], rejected=sums[half:])


class LengthDesensitized(LossWrapper):
    """LD-DPO, Liu et al. 2024 (Length Desensitization in DPO, arXiv 2409.06411).

    ``log pi_hat(y) = sum_{k <= l_p} log p(y_k) + alpha * sum_{k > l_p} log p(y_k)``, with
    ``l_p = min(|yw|, |yl|)``: the verbose tail past the shorter response counts with weight
    ``alpha``, so the loss is less driven by length. The wrapped loss (DPO for LD-DPO proper; any
    loss of summed log-probs) then sees ``pi_hat`` for the policy.

    ``reference_too=False`` (as TRL's ``ld_alpha``) leaves the reference sums unchanged;
    ``True`` applies the same weighting to the reference, which then must run a model each step
    (frozen, adapter-disabled, moving, unconditional): cached or dataset-column log-probs are sums
    only, and the module refuses that combination at construction.
    """

    def __init__(self, loss: PreferenceLoss, alpha: float = 0.5, reference_too: bool = False) -> None:
        """
        Args:
            loss: The loss that sees the desensitised log-probs (``DPO`` for LD-DPO proper; any loss of summed
                log-probs).
            alpha: Weight of tokens past the shorter completion, in [0, 1]; 1 is the wrapped loss unchanged.
            reference_too: Also reweight the reference's log-probs (needs per-token reference log-probs).
        """
        super().__init__(loss)
        self.alpha = check_in_range("alpha", alpha, 0.0, 1.0, high_inclusive=True)
        self.reference_too = reference_too

    @property
    def logps_request(self) -> LogpsRequest:
        return self.loss.logps_request | LogpsRequest(token_logps=True)

    @property
    def reference_logps_request(self) -> LogpsRequest:
        return self.loss.reference_logps_request | LogpsRequest(token_logps=self.reference_too)

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        policy_hat = desensitized_sums(policy, self.alpha)
        reference_hat = desensitized_sums(reference, self.alpha) if self.reference_too and reference is not None else reference
        out = self.loss(policy_hat, reference_hat, batch)
        metrics = dict(out.metrics)
        metrics["ld/dropped_logps"] = ((policy.chosen - policy_hat.chosen) + (policy.rejected - policy_hat.rejected)).detach().mean()
        return LossOutput(out.losses, metrics)

    def describe(self) -> str:
        return f"LengthDesensitized({self.loss.describe()}, alpha={self.alpha:g}, reference_too={self.reference_too})"
