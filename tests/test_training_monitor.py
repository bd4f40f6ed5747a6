"""TrainingMonitor: lr, gradient norm before clipping, tokens/s and MFU on every logging step; TensorBoard / W&B loggers."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from callbacks.training_monitor import TrainingMonitor, flops_per_token, matmul_params
from tests.conftest import quiet_trainer

MONITORED = ("train/lr", "train/grad_norm", "train/tokens", "train/tokens_per_s", "train/mfu")


class RecordGrads:
    """Before clipping (on_before_optimizer_step): the gradient norm in float64, and the tokens of each batch."""

    def __init__(self) -> None:
        import lightning as L

        outer = self

        class _Callback(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                outer.tokens.append(int(batch.attention_mask.sum()))

            def on_before_optimizer_step(self, trainer, pl_module, optimizer):
                squares = sum(float(p.grad.double().pow(2).sum()) for p in pl_module.policy.parameters() if p.grad is not None)
                outer.norms.append(math.sqrt(squares))

        self.callback = _Callback()
        self.norms: list[float] = []
        self.tokens: list[int] = []


def fit_with_monitor(tmp_path: Path, sort_task, monitor: TrainingMonitor, steps: int = 6, **trainer):
    from lightning.pytorch.loggers import CSVLogger

    from lit_align.data import PreferenceDataModule
    from lit_align.models import TinyModel
    from lit_align.module import PreferenceModule

    module = PreferenceModule(model=TinyModel(hidden_size=32, num_layers=1, num_heads=2), lr=1e-2)
    data = PreferenceDataModule(train_path=str(sort_task["train"]), batch_size=4)
    record = RecordGrads()
    logger = CSVLogger(str(tmp_path), name="", version="")
    settings = dict(max_steps=steps, log_every_n_steps=2, logger=logger, callbacks=[monitor, record.callback], **trainer)
    quiet_trainer(**settings).fit(module, data)
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f)]
    return module, rows, record


def logged(rows: list[dict], name: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[name])) for r in rows if r.get(name)]


def test_every_logging_step_has_lr_grad_norm_throughput_and_mfu(tmp_path, sort_task):
    module, rows, record = fit_with_monitor(tmp_path, sort_task, TrainingMonitor(peak_flops=1e12), steps=6, gradient_clip_val=1e-4)
    loss_steps = [s for s, _ in logged(rows, "train/loss")]
    assert loss_steps == [1, 3, 5]  # log_every_n_steps=2 of 6 steps
    for name in MONITORED:
        assert [s for s, _ in logged(rows, name)] == loss_steps, name
    # the gradient norm is the one BEFORE clipping to 1e-4, computed independently (float64 sum of squares)
    for step, value in logged(rows, "train/grad_norm"):
        assert value == pytest.approx(record.norms[step], rel=1e-4) and value > 1e-2
    # the learning rate the step used: warmup 0.1 of 6 -> 1 step, then cosine over 5 (by hand)
    for step, value in logged(rows, "train/lr"):
        assert value == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * (step - 1) / 5)), rel=1e-6)
    # MFU = tokens/s x FLOPs per token / peak, with 8N FLOPs per token (6N policy + 2N frozen reference)
    total, trainable = matmul_params(module.policy)
    # by the config: a tied input embedding is also the head's matmul and counts; an untied one is a lookup
    embedding = module.policy.model.embed_tokens.weight.numel()
    tied = module.policy.config.tie_word_embeddings
    assert total == trainable == sum(p.numel() for p in module.policy.parameters()) - (0 if tied else embedding)
    assert flops_per_token(module) == 8 * total
    # real (non-padding) tokens of every batch so far, counted independently on the host
    for step, value in logged(rows, "train/tokens"):
        assert value == sum(record.tokens[: step + 1])
    rates, mfus = dict(logged(rows, "train/tokens_per_s")), dict(logged(rows, "train/mfu"))
    for step in loss_steps:
        assert mfus[step] == pytest.approx(rates[step] * 8 * total / 1e12, rel=1e-5)
        assert rates[step] > 0


def test_no_peak_known_on_cpu_logs_throughput_but_no_mfu(tmp_path, sort_task):
    _, rows, _ = fit_with_monitor(tmp_path, sort_task, TrainingMonitor(), steps=2)
    assert logged(rows, "train/tokens_per_s") and not logged(rows, "train/mfu")


def test_flops_per_token_follow_the_reference_and_the_trainable_share(tiny_source):
    """LoRA: frozen base weights need no weight gradients (4N + 2N_lora); no reference forward: no 2N."""
    from lit_align.losses import SFT
    from lit_align.module import PreferenceModule
    from lit_align.peft_config import LoraSource
    from lit_align.reference import AdapterDisabledReference, NoReference

    sft = PreferenceModule(model=tiny_source, loss=SFT(), reference=NoReference())
    sft.configure_model()
    n = matmul_params(sft.policy)[0]
    assert flops_per_token(sft) == 6 * n
    lora = PreferenceModule(model=LoraSource(tiny_source, r=2), reference=AdapterDisabledReference())
    lora.configure_model()
    total, trainable = matmul_params(lora.policy)
    assert 0 < trainable < total
    assert flops_per_token(lora) == 4 * total + 2 * trainable + 2 * total  # + the adapter-off reference forward


def test_tensorboard_logger_receives_the_metrics(tmp_path, sort_task):
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lit_align.data import PreferenceDataModule
    from lit_align.models import TinyModel
    from lit_align.module import PreferenceModule

    module = PreferenceModule(model=TinyModel(hidden_size=32, num_layers=1, num_heads=2), lr=1e-2)
    data = PreferenceDataModule(train_path=str(sort_task["train"]), batch_size=4)
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="")
    quiet_trainer(max_steps=4, log_every_n_steps=2, logger=logger, callbacks=[TrainingMonitor()]).fit(module, data)
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"} <= tags, tags
    assert [e.step for e in events.Scalars("train/lr")] == [1, 3]


@pytest.mark.parametrize("accumulate", [2, 3])
def test_tokens_under_accumulation_count_every_micro_batch(tmp_path, sort_task, accumulate):
    """An optimizer step of ``accumulate`` micro-batches counts all their tokens, not only the last one's."""
    _, rows, record = fit_with_monitor(tmp_path, sort_task, TrainingMonitor(), steps=4, accumulate_grad_batches=accumulate)
    assert len(record.tokens) == 4 * accumulate
    tokens = logged(rows, "train/tokens")
    assert [s for s, _ in tokens] == [1, 3]
    for step, value in tokens:
        assert value == sum(record.tokens[: (step + 1) * accumulate])
