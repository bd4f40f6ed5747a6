"""epsilon-DPO: a per-pair beta from logit mixing, and a baseline beta that follows it."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.batch import LogpsRequest, LossOutput, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.losses.base import Float64State, all_reduce_sum, check_positive, logsigmoid, reward_metrics


class EpsilonDPO(Float64State):
    """epsilon-DPO, Lee et al. 2025 (arXiv 2502.13177; official code oddqueue/e-dpo).

    With policy logits ``f`` and reference logits ``g`` at each completion position, the log-prob
    pass also scores each sequence under ``f_minus = (1+eps) f - eps g`` (the policy that beta/(1+eps)
    would give) and ``f_plus = (1-eps) f + eps g`` (beta/(1-eps)), renormalising per token (see
    ``lit_align.logprobs.chunked_logps``; no second full-logits tensor is held). With
    ``z = pw - pl`` under ``f``, ``f_minus`` and ``f_plus`` (no grad):

    - ``s_i = +1`` if ``z_minus > z > z_plus``; ``-1`` if ``z_plus > z > z_minus``; else 0;
    - ``beta_i = beta / (1 + eps * s_i)``, ``L_i = -ls(beta_i * D_i)``; reward metrics use ``beta_i``;
    - after each optimizer step ``beta <- beta / (1 + eps * mean(s))``, the mean over every pair of
      the accumulation window on all ranks (training forwards only; validation does not count).

    The baseline beta is a float64 buffer, so it is checkpointed (the official code does not) and
    survives bf16 casts. It needs the reference's full logits every step: incompatible with cached
    reference log-probs.
    """

    def __init__(self, beta: float = 0.01, eps: float = 0.01) -> None:
        """
        Args:
            beta: Initial baseline beta (0.01 in the paper); it then moves by a factor 1 / (1 + eps * mean(s))
                after each optimizer step and is checkpointed.
            eps: Logit-mixing perturbation size (0.01 in the paper); also the per-step beta change.
        """
        super().__init__()
        check_positive("beta", beta)
        self.eps = check_positive("eps", eps)
        if self.eps >= 1:
            raise ConfigError(f"eps must be < 1 (beta / (1 - eps) must stay positive), got {eps}")
        self.register_buffer("baseline_beta", torch.tensor(float(beta), dtype=torch.float64))
        """Baseline beta, initialised to ``beta`` (0.01 in the paper) and updated once per optimizer step."""
        self._step_sum: Tensor | None = None  # sum of s_i since the last optimizer step (not a buffer:
        self._step_count: Tensor | None = None  # DDP broadcasts buffers from rank 0 on every forward)

    @property
    def logps_request(self) -> LogpsRequest:
        return LogpsRequest(mix_eps=self.eps)

    @staticmethod
    def steps(policy: SequenceLogps) -> Tensor:
        """Per-pair step ``s`` in {-1, 0, +1} (B,) from the policy's plain and mixed sequence log-probs."""
        if policy.mixed_minus is None or policy.mixed_plus is None:
            raise ConfigError("EpsilonDPO needs the epsilon-mixed log-probs: compute them with its logps_request")
        half = policy.chosen.shape[0]
        z = (policy.chosen - policy.rejected).detach()  # (B,)
        z_minus = policy.mixed_minus[:half] - policy.mixed_minus[half:]  # (B,)
        z_plus = policy.mixed_plus[:half] - policy.mixed_plus[half:]
        up = (z_minus > z) & (z > z_plus)
        down = (z_plus > z) & (z > z_minus)
        return up.to(z.dtype) - down.to(z.dtype)

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        s = self.steps(policy)  # (B,)
        beta_i = (self.baseline_beta / (1 + self.eps * s.double())).to(policy.chosen.dtype)  # (B,)
        rw = policy.chosen - reference.chosen  # (B,)
        rl = policy.rejected - reference.rejected
        losses = -logsigmoid(beta_i * (rw - rl))
        if torch.is_grad_enabled():  # a training forward: count towards the next baseline update
            total, count = s.detach().double().sum(), torch.tensor(float(s.numel()), dtype=torch.float64, device=s.device)
            self._step_sum = total if self._step_sum is None else self._step_sum + total
            self._step_count = count if self._step_count is None else self._step_count + count
        metrics = reward_metrics(beta_i, rw, rl)
        metrics["beta/baseline"] = self.baseline_beta.detach().float().clone()
        metrics["beta/mean_pair"] = beta_i.detach().mean()
        metrics["beta/min_pair"], metrics["beta/max_pair"] = beta_i.detach().min(), beta_i.detach().max()  # spread of per-pair beta
        metrics["eps/step_mean"] = s.mean()
        return LossOutput(losses, metrics)

    @torch.no_grad()
    def after_optimizer_step(self, applied: bool = True) -> None:
        """``beta <- beta / (1 + eps * mean(s))`` over the accumulation window and all ranks, then reset.

        A skipped step skips the update on every rank alike (the scaler's overflow check sees the
        all-reduced gradients), so the collective is skipped with it.
        """
        if not applied:
            self._step_sum = self._step_count = None
            return
        local = torch.zeros(2, dtype=torch.float64, device=self.baseline_beta.device)
        if self._step_count is not None:
            local = torch.stack([self._step_sum, self._step_count]).to(local.device)
        total = all_reduce_sum(local)  # every rank calls this once per optimizer step
        if total[1] > 0:
            self.baseline_beta.div_(1 + self.eps * total[0] / total[1])
        self._step_sum = self._step_count = None

    def describe(self) -> str:
        return f"EpsilonDPO(beta={float(self.baseline_beta):g}, eps={self.eps:g})"
