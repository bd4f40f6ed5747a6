"""One TRL DPOTrainer run in this process (started by trl_vs_lit.py in a fresh subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.configs import Config
from benchmarks.measure import Clock, Result
from benchmarks.workload import sample_order


def run(config: Config, model_dir: str, train_path: str, workdir: str, batch_size: int, steps: int,
        lr: float, beta: float, max_length: int, attn_implementation: str | None = None) -> Result:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    clock = Clock()
    cuda = clock.cuda
    rows = [json.loads(line) for line in Path(train_path).read_text().splitlines()]
    rows = [rows[i] for i in sample_order(len(rows))]  # lit-align's epoch-0 order, read sequentially
    dataset = Dataset.from_list(rows)

    class Trainer(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            self._last_loss = (out[0] if isinstance(out, tuple) else out).detach()  # read after the step's sync
            return out

    class StepEnd(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step(trainer._last_loss)

    args = DPOConfig(
        output_dir=f"{workdir}/trl_out", per_device_train_batch_size=batch_size, learning_rate=lr,
        lr_scheduler_type="constant", warmup_steps=0, max_steps=steps, beta=beta, loss_type=["sigmoid"],
        max_length=max_length, max_grad_norm=0.0, weight_decay=0.0, optim="adamw_torch",
        train_sampling_strategy="sequential", dataloader_num_workers=0, bf16=config.bf16, use_cpu=not cuda, seed=0,
        precompute_ref_log_probs=config.cached, report_to=[], save_strategy="no", logging_steps=10**6,
        disable_tqdm=True, gradient_checkpointing=config.checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, pad_to_multiple_of=None,
    )
    clock.start()
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[StepEnd()])
    trainer.train()
    if cuda:  # the policy really trained on the GPU (not a CPU fallback)
        assert next(trainer.model.parameters()).is_cuda, "TRL policy is not on the GPU"
    return clock.result()
