"""Learning rate, gradient norm, throughput and MFU, logged every logging step.

Logged as ``train/lr``, ``train/grad_norm`` (the total 2-norm of the policy's gradients after unscaling and
BEFORE clipping: Lightning clips after ``on_before_optimizer_step``), ``train/tokens`` (real tokens
of the policy's input rows so far, this rank; TRL's ``num_tokens``), ``train/tokens_per_s`` and
``train/mfu``. Everything is computed on logging steps only (``trainer.log_every_n_steps``) and
kept on the device: Lightning's own logging of that step is the one host sync.

Throughput: real (non-padding) tokens of the policy's input rows, summed over every micro-batch
since the previous logging step, divided by the host wall-clock time between the two logging
steps. That window ends at a sync point (the previous step's logging), so it measures the device,
not only the host's queueing; it includes data loading and validation that ran inside it.
Per device: under data parallelism every rank counts its own tokens.

MFU (model FLOPs utilisation) = tokens/s x FLOPs per token / peak FLOP/s of one device, with the
usual dense-transformer estimate (Kaplan et al. 2020; Chowdhery et al. 2022, appendix B) that leaves
out attention's sequence-length term: per token, a forward costs 2N (N = the model's matmul
parameters: all but the input embeddings, unless they are tied to the output head), the backward 2N
for activation gradients plus 2N_trainable for weight gradients (so 6N for full fine-tuning, about
4N for LoRA), and each reference forward 2N of its model (the frozen copy, a moving reference, every
model of an ensemble, or the policy itself with adapters off): 8N for DPO against a frozen copy.
"""

from __future__ import annotations

import time

import lightning as L
import torch
from torch import nn


def matmul_params(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameters that take part in matmuls: input embeddings are a lookup, unless tied to the head."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    lookup = embedding.weight if embedding is not None else None
    tied = head is not None and lookup is not None and head.weight is lookup
    total = trainable = 0
    for param in model.parameters():  # unique parameters: a tied head counts once
        if param is lookup and not tied:
            continue
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return total, trainable


def flops_per_token(module: L.LightningModule) -> float:
    """Training FLOPs per policy token of one optimizer step: policy forward + backward, reference forwards."""
    from lit_align.reference import AdapterDisabledReference

    total, trainable = matmul_params(module.policy)
    flops = 4.0 * total + 2.0 * trainable
    if module.loss.requires_reference or module.loss.requires_reference_logits:
        for reference in module.reference.reference_models():
            flops += 2.0 * matmul_params(reference)[0]
        if isinstance(module.reference, AdapterDisabledReference):
            flops += 2.0 * total
    return flops


def device_peak_flops(trainer: L.Trainer, device: torch.device) -> float | None:
    """Lightning's table of dense peak FLOP/s for the device and the run's compute dtype (None if unknown: CPUs)."""
    from lightning.fabric.utilities.throughput import get_available_flops
    from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype

    if device.type != "cuda":
        return None
    return get_available_flops(device, _plugin_to_compute_dtype(trainer.precision_plugin))


WALL_CLOCK_METRICS = ("train/tokens_per_s", "train/mfu")
"""Metrics measured with the host's clock: the only logged values that differ between two runs of the same fit."""


class TrainingMonitor(L.Callback):
    """Logs train/lr, train/grad_norm (before clipping), train/tokens, train/tokens_per_s and train/mfu every logging step."""

    def __init__(self, peak_flops: float | None = None, grad_norm: bool = True) -> None:
        """
        Args:
            peak_flops: Peak FLOP/s of one device for MFU (e.g. 989e12: H100 SXM, dense bf16). None: Lightning's
                table for the GPU and the precision in use; on a CPU (no table) only tokens/s is logged.
            grad_norm: Log the total gradient norm before clipping (one extra reduction over the gradients
                on logging steps).
        """
        self.peak_flops = peak_flops
        self.grad_norm = grad_norm
        self._tokens: torch.Tensor | None = None  # since the last logging step
        self._seen: torch.Tensor | None = None  # since the start of the fit
        self._resumed = {"seen": 0.0, "pending": 0.0}  # a resumed fit's counts (load_state_dict)
        self._since = 0.0
        self._flops_per_token = 0.0
        self._peak: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flops_per_token = flops_per_token(pl_module)
        self._peak = self.peak_flops if self.peak_flops is not None else device_peak_flops(trainer, pl_module.device)
        self._tokens = torch.tensor(self._resumed["pending"], dtype=torch.float64, device=pl_module.device)
        self._seen = torch.tensor(self._resumed["seen"], dtype=torch.float64, device=pl_module.device)
        self._since = time.perf_counter()

    def state_dict(self) -> dict[str, float]:
        # the token count goes on across a resume (train/tokens of a resumed run equals the uninterrupted run's);
        # the wall-clock window does not: tokens/s restarts at the resume
        if self._seen is None:
            return dict(self._resumed)
        return {"seen": float(self._seen), "pending": float(self._tokens)}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._resumed = {"seen": float(state_dict.get("seen", 0.0)), "pending": float(state_dict.get("pending", 0.0))}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        mask = getattr(batch, "attention_mask", None)
        if mask is not None and self._tokens is not None:
            self._tokens += mask.sum()  # stays on the device: no sync

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        # The same test Lightning applies when it sends this step's metrics to the loggers.
        if not trainer._logger_connector.should_update_logs or self._tokens is None:
            return
        metrics = {"train/lr": torch.tensor(optimizer.param_groups[0]["lr"], dtype=torch.float64)}
        if self.grad_norm:
            grads = [p.grad for p in pl_module.policy.parameters() if p.grad is not None]
            if grads:
                norm = torch.nn.utils.get_total_norm(grads, 2.0)
                metrics["train/grad_norm"] = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: DTensor
        now = time.perf_counter()
        rate = self._tokens / max(now - self._since, 1e-9)
        self._seen += self._tokens
        metrics["train/tokens"] = self._seen.clone()
        metrics["train/tokens_per_s"] = rate
        if self._peak:
            metrics["train/mfu"] = rate * self._flops_per_token / self._peak
        self._tokens = torch.zeros_like(self._tokens)
        self._since = now
        for name, value in metrics.items():
            pl_module.log(name, value.to(pl_module.device, torch.float32), on_step=True, on_epoch=False, batch_size=1)
