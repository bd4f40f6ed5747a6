"""Moving references (TR-DPO, Gorbatovski et al., arXiv 2404.09656): EMA soft update and hard sync.

Every ``tau`` optimizer steps (first at step ``tau``, counted after gradient accumulation):
``theta_ref <- alpha * theta + (1 - alpha) * theta_ref`` over all parameters. ``alpha < 1`` is the
soft (EMA) update, ``alpha = 1`` the hard sync; the two settings are independent (a per-step EMA
is ``tau = 1`` with a small alpha).

The update runs in ``after_optimizer_step``, which the module calls right after the optimizer
step and before any callback can checkpoint, so a checkpoint never holds a reference one update
behind its policy; the reference weights and the update counters (buffers) are checkpointed
(``checkpoint_weights``), never rebuilt from the start weights on resume. The update is element-wise, so it runs on whatever each rank
holds: full replicas under DDP, local shards under FSDP2 (reference and policy sharded alike).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_align.errors import ConfigError
from lit_align.logprobs import unwrap_causal_lm
from lit_align.models import ModelSource
from lit_align.reference.base import ReferenceContext
from lit_align.reference.frozen import FrozenReference


def _local(t: Tensor) -> Tensor:
    """The shard a rank holds (a DTensor's local tensor under FSDP2; the tensor itself otherwise)."""
    return t.to_local() if hasattr(t, "to_local") else t


def parameter_pairs(reference: nn.Module, policy: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """(reference, policy) parameters matched by name (the policy unwrapped from PEFT, LoRA layers included)."""
    policy_params = dict(unwrap_causal_lm(policy).named_parameters())
    ref_params = dict(reference.named_parameters())
    if set(policy_params) != set(ref_params):
        only_ref = sorted(set(ref_params) - set(policy_params))[:3]
        only_pol = sorted(set(policy_params) - set(ref_params))[:3]
        raise ConfigError(
            f"a moving reference needs the policy's architecture (parameter names differ: reference-only {only_ref}, "
            f"policy-only {only_pol}); use a source of the same model, or FrozenReference"
        )
    return [(ref_params[name], policy_params[name]) for name in ref_params]


def _sharded_sum(value: Tensor, sample: Tensor) -> Tensor:
    """Sum a per-rank partial over the shard group of a DTensor (FSDP2); a no-op for plain tensors."""
    mesh = getattr(sample, "device_mesh", None)
    if mesh is not None and any(p.is_shard() for p in sample.placements):
        torch.distributed.all_reduce(value, group=mesh.get_group())
    return value


@torch.no_grad()
def move_towards(pairs: list[tuple[Tensor, Tensor]], alpha: float) -> float:
    """``ref <- alpha * policy + (1 - alpha) * ref`` in the reference's dtype; returns ||ref - policy|| before.

    After the update the distance is exactly ``(1 - alpha)`` times the returned one, so one pass
    gives both. ``alpha == 1`` copies (a lerp with weight 1 is not bit-exact).
    """
    sq = torch.zeros((), dtype=torch.float64, device=pairs[0][0].device if pairs else "cpu")
    for ref, pol in pairs:
        r, p = _local(ref), _local(pol).to(_local(ref).dtype)
        sq += (r.double() - p.double()).pow(2).sum()
        if alpha == 1.0:
            r.copy_(p)
        else:
            r.lerp_(p, alpha)
    if pairs:
        sq = _sharded_sum(sq, pairs[0][0])
    return math.sqrt(float(sq))


class MovingReference(FrozenReference):
    """TR-DPO reference: starts as the policy (or ``source``) and moves towards it every ``tau`` steps.

    Weights are kept in ``dtype`` (float32 by default, as fp32 master weights: with a bf16 policy a
    bf16 lerp with a small alpha rounds to no change) and the reference forward runs in that dtype.
    """

    checkpoint_weights = True

    def __init__(self, alpha: float = 0.6, tau: int = 512, source: ModelSource | None = None, dtype: str | None = "float32") -> None:
        """
        Args:
            alpha: Weight of the policy in each update: 1 copies it (hard sync), < 1 is a soft EMA update (0.6
                in TR-DPO).
            tau: Optimizer steps between updates (after gradient accumulation); the first update is at step tau
                (512 in TR-DPO).
            source: A ModelSource for the reference's starting weights (same architecture as the policy); None:
                the policy's start.
            dtype: Dtype of the reference weights and forward; float32 by default (fp32 master weights: in bf16
                a small-alpha update rounds to no change); None: the policy's.
        """
        super().__init__(source=source, dtype=dtype)
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"alpha must be in (0, 1] (1 = hard sync), got {alpha}")
        if tau < 1:
            raise ConfigError(f"tau must be a positive number of optimizer steps, got {tau}")
        self.alpha = alpha
        self.tau = tau
        # Buffers, so they are checkpointed with the weights (resume continues the schedule exactly)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # updates applied so far
        self.register_buffer("last_step", torch.zeros((), dtype=torch.long))  # step of the last update: never twice
        self.register_buffer("distance", torch.zeros((), dtype=torch.float64))  # ||ref - policy|| right after it
        self.register_buffer("drift", torch.zeros((), dtype=torch.float64))  # ||ref - policy|| right before it

    def configure(self, policy: nn.Module, context: ReferenceContext) -> None:
        super().configure(policy, context)
        parameter_pairs(self.model, policy)  # fail at startup, not at step tau

    def after_optimizer_step(self, policy: nn.Module, step: int) -> None:
        if step % self.tau != 0 or step == int(self.last_step):  # (the buffer is read on update steps only)
            return
        drift = move_towards(parameter_pairs(self.model, policy), self.alpha)
        self.drift.fill_(drift)
        self.distance.fill_((1.0 - self.alpha) * drift)
        self.updates += 1
        self.last_step.fill_(step)

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"ref/updates": self.updates, "ref/param_distance": self.distance, "ref/drift": self.drift}

    def describe(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha}, tau={self.tau})"


class EMAReference(MovingReference):
    """Soft update every step by default: ``theta_ref <- alpha * theta + (1 - alpha) * theta_ref``."""

    def __init__(self, alpha: float = 0.01, tau: int = 1, source: ModelSource | None = None, dtype: str | None = "float32") -> None:
        """
        Args:
            alpha: Weight of the policy in each update (small: a slow exponential moving average); 1 would copy
                it.
            tau: Optimizer steps between updates (1: after every optimizer step, counted after gradient
                accumulation).
            source: A ModelSource for the reference's starting weights (same architecture as the policy); None:
                the policy's start.
            dtype: Dtype of the reference weights and forward; float32 by default (fp32 master weights: in bf16
                a small-alpha update rounds to no change); None: the policy's.
        """
        super().__init__(alpha=alpha, tau=tau, source=source, dtype=dtype)


class SyncReference(MovingReference):
    """Hard periodic sync: the reference becomes a copy of the policy every ``tau`` optimizer steps."""

    def __init__(self, tau: int = 512, source: ModelSource | None = None, dtype: str | None = "float32") -> None:
        """
        Args:
            tau: Optimizer steps between hard syncs (counted after gradient accumulation); the first sync is at
                step tau (512 in TR-DPO).
            source: A ModelSource for the reference's starting weights (same architecture as the policy); None:
                the policy's start.
            dtype: Dtype of the reference weights and forward (float32 by default); None: the policy's.
        """
        super().__init__(alpha=1.0, tau=tau, source=source, dtype=dtype)
