"""One lit-align run in this process (started by trl_vs_lit.py in a fresh subprocess)."""

from __future__ import annotations

import importlib

import lightning as L

from benchmarks.configs import Config
from benchmarks.measure import Clock, Result


class _Recorder(L.Callback):
    """Per-step loss and wall clock at the end of each optimizer step."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.step(outputs["loss"].detach())


def run(config: Config, model_dir: str, train_path: str, workdir: str, batch_size: int, steps: int,
        lr: float, beta: float, max_length: int, attn_implementation: str | None = None) -> Result:
    import torch

    from lit_align.data.datamodule import PreferenceDataModule
    from lit_align.losses import DPO
    from lit_align.models import PretrainedModel
    from lit_align.module import PreferenceModule
    from lit_align.reference import CachedReference, FrozenReference

    clock = Clock()
    module_path, _, name = config.collator.rpartition(".")
    collator_class = getattr(importlib.import_module(module_path), name)

    reference = CachedReference(cache_dir=f"{workdir}/ref_cache", batch_size=batch_size) if config.cached else FrozenReference()
    module = PreferenceModule(model=PretrainedModel(model_dir, attn_implementation=attn_implementation), loss=DPO(beta=beta),
                              reference=reference, lr=lr, warmup_steps=0, schedule="constant",
                              logps_chunk_size=config.chunk_size, compile=config.compile,
                              activation_checkpointing=config.checkpointing)
    data = PreferenceDataModule(train_path=train_path, format="explicit", chat_template=False, batch_size=batch_size,
                                max_length=max_length, max_prompt_length=max_length, pad_to_multiple_of=1, seed=0,
                                collator=collator_class)
    # not tests' quiet_trainer: this one takes the GPU when there is one, at the benchmark's precision, and
    # benchmarks/ does not import the test package
    trainer = L.Trainer(
        max_steps=steps, accelerator="gpu" if torch.cuda.is_available() else "cpu", devices=1,
        precision="bf16-mixed" if config.bf16 else "32-true",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[_Recorder(clock)],
    )
    clock.start()
    trainer.fit(module, datamodule=data)
    if clock.cuda:  # the policy really trained on the GPU (not a CPU fallback)
        assert next(module.policy.parameters()).is_cuda, "lit-align policy is not on the GPU"
    return clock.result()
