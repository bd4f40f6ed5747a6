"""BCO in its pairwise form, with the paper's running-mean reward shift."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.batch import LossOutput, PreferenceBatch, SequenceLogps
from lit_align.losses.base import Divergence, Float64State, PairwiseLoss, all_reduce_sum, logsigmoid, reward_metrics


class BCOPair(Float64State, PairwiseLoss):
    """BCO, Jung et al. 2024 (Binary Classifier Optimization, arXiv 2404.04656), pairwise form (TRL's ``bco_pair``).

    ``L = -ls(beta rw - delta) - ls(-(beta rl - delta))``: chosen and rejected are classified
    separately around ``delta``, the running mean of all implicit rewards ``beta * r`` seen in
    training (chosen and rejected alike). ``shift=False`` fixes ``delta = 0``.

    ``delta`` is a float64 buffer (checkpointed) and, like epsilon-DPO's beta, is updated once per
    optimizer step from the rewards of the whole accumulation window on all ranks, so a step uses
    the mean as of the previous step (TRL updates it per micro-batch, before use).
    """

    def __init__(self, beta: float = 0.1, shift: bool = True, divergence: Divergence | None = None) -> None:
        """
        Args:
            beta: Scale of the implicit rewards ``beta * r`` that are classified around ``delta``.
            shift: Apply the running-mean shift delta (the paper's); False is the plain pairwise BCO.
            divergence: f-divergence whose score ``f'(pi / pi_ref)`` replaces each log-ratio (f-DPO, arXiv
                2309.16240: ``ForwardKL``, ``JensenShannon``, ``AlphaDivergence``); None: reverse KL, the
                log-ratio itself.
        """
        super().__init__(beta, divergence)
        self.shift = shift
        self.register_buffer("running_mean", torch.zeros((), dtype=torch.float64))
        """delta: mean of every training reward seen so far."""
        self.register_buffer("running_count", torch.zeros((), dtype=torch.float64))
        """Number of rewards behind ``running_mean``."""
        self._window: Tensor | None = None  # (sum, count) since the last optimizer step; not a buffer (DDP)

    def pair_loss(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        delta = self.running_mean.to(chosen.dtype) if self.shift else 0.0
        return -logsigmoid(self.beta * chosen - delta) - logsigmoid(-(self.beta * rejected - delta))

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        sw, sl = self.scores(policy, reference)  # (B,)
        losses = self.pair_loss(sw, sl)
        if torch.is_grad_enabled():
            rewards = self.beta * torch.cat([sw, sl]).detach().double()  # (2B,)
            stats = torch.stack([rewards.sum(), torch.tensor(float(rewards.numel()), dtype=torch.float64, device=rewards.device)])
            self._window = stats if self._window is None else self._window + stats
        metrics = reward_metrics(self.beta, sw, sl)
        metrics["bco/running_mean"] = self.running_mean.detach().float().clone()
        return LossOutput(losses, metrics)

    @torch.no_grad()
    def after_optimizer_step(self, applied: bool = True) -> None:
        if not applied:  # a skipped step (see PreferenceLoss.after_optimizer_step): drop its window
            self._window = None
            return
        local = torch.zeros(2, dtype=torch.float64, device=self.running_mean.device)
        if self._window is not None:
            local = self._window.to(local.device)
        total = all_reduce_sum(local)
        if total[1] > 0:
            count = self.running_count + total[1]
            self.running_mean.copy_((self.running_mean * self.running_count + total[0]) / count)
            self.running_count.copy_(count)
        self._window = None
