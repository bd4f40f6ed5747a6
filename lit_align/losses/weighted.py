"""Weighted sum of losses, itself a loss, so a module always holds exactly one."""

from __future__ import annotations

from functools import reduce

import torch
from torch import nn

from lit_align.batch import LogpsRequest, LossOutput, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.losses.base import PreferenceLoss


class WeightedLoss(PreferenceLoss):
    """``L = sum_k w_k L_k`` per pair. Each term's loss and metrics are logged under ``<name>/``.

    Term names are the lower-cased class names (``dpo``, ``sft``), numbered when a class repeats.
    The reward metrics of the first term that reports them are also exposed unprefixed, so
    dashboards keyed on ``rewards/margins`` keep working for composites such as RPO.
    """

    def __init__(self, losses: list[PreferenceLoss], weights: list[float] | None = None) -> None:
        """
        Args:
            losses: The losses to sum (class_path entries), in order; each is logged under its lower-cased class
                name.
            weights: One weight per loss (default 1 each).
        """
        super().__init__()
        if not losses:
            raise ConfigError("WeightedLoss needs at least one loss")
        weights = [1.0] * len(losses) if weights is None else list(weights)
        if len(weights) != len(losses):
            raise ConfigError(f"WeightedLoss got {len(losses)} losses but {len(weights)} weights")
        for weight in weights:
            if not weight >= 0:
                raise ConfigError(f"WeightedLoss weights must be >= 0, got {weight}")
        self.terms = nn.ModuleList(losses)
        """The losses to sum."""
        self.weights = weights
        self.names = self._term_names(losses)

    @staticmethod
    def _term_names(losses: list[PreferenceLoss]) -> list[str]:
        names, seen = [], {}
        for loss in losses:
            base = type(loss).__name__.lower()
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}{seen[base]}")
        return names

    @property
    def requires_reference(self) -> bool:  # type: ignore[override]
        return any(t.requires_reference for t in self.terms)

    @property
    def requires_unconditional_reference(self) -> bool:  # type: ignore[override]
        return any(t.requires_unconditional_reference for t in self.terms)

    @property
    def uses_rejected(self) -> bool:  # type: ignore[override]
        return any(t.uses_rejected for t in self.terms)

    @property
    def logps_request(self) -> LogpsRequest:
        return reduce(lambda a, b: a | b, (t.logps_request for t in self.terms))

    @property
    def reference_logps_request(self) -> LogpsRequest:
        return reduce(lambda a, b: a | b, (t.reference_logps_request for t in self.terms))

    def forward(self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch) -> LossOutput:
        total = torch.zeros_like(policy.chosen)
        metrics = {}
        for name, weight, term in zip(self.names, self.weights, self.terms):
            out = term(policy, reference, batch)
            total = total + weight * out.losses
            metrics[f"{name}/loss"] = out.losses.detach().mean()
            for key, value in out.metrics.items():
                metrics[f"{name}/{key}"] = value
                if key.startswith("rewards/") and key not in metrics:
                    metrics[key] = value
        return LossOutput(total, metrics)

    def after_optimizer_step(self, applied: bool = True) -> None:
        for term in self.terms:
            term.after_optimizer_step(applied)

    def describe(self) -> str:
        return " + ".join(f"{w:g}*{n}" for n, w in zip(self.names, self.weights))
