"""Two-process (gloo, CPU) run of a moving reference under DDP or FSDP2; launched by test_sharded_reference.py.

    python tests/helpers_reference_sharded.py {ddp|fsdp} DATA_DIR OUT_DIR

Each rank trains 4 steps with ``MovingReference(alpha=0.5, tau=2)`` (updates at steps 2 and 4),
records the FULL policy weights at each update, replays ``ref <- lerp(ref, theta, 0.5)`` on full
weights, and saves the reference it ended with (gathered to full tensors) next to the replay.
For FSDP2 the module shards policy and reference alike in ``configure_model`` (what
``PreferenceModule`` would need to do), so the update runs on local shards only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from lit_align.data.datamodule import PreferenceDataModule
from lit_align.logprobs import unwrap_causal_lm
from lit_align.models import TinyModel
from lit_align.module import PreferenceModule
from lit_align.reference import MovingReference


def full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


class UntiedTiny(TinyModel):
    """The tiny model with an untied head: FSDP2 units must not share a parameter across calls."""

    def config(self):
        config = super().config()
        config.tie_word_embeddings = False
        return config


class Recording(MovingReference):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.initial: dict[str, torch.Tensor] = {}
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def after_optimizer_step(self, module, step: int) -> None:
        if not self.initial:
            self.initial = {k: full(v) for k, v in self.model(module).named_parameters()}
        if step % self.tau == 0:
            self.snapshots.append({k: full(v) for k, v in unwrap_causal_lm(module.policy).named_parameters()})
        super().after_optimizer_step(module, step)


class FSDP2Module(PreferenceModule):
    """Shards each decoder layer, the decoder and the head of policy and references on the data-parallel mesh."""

    def configure_model(self) -> None:
        if self.policy is not None:
            return
        super().configure_model()
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for model, reshard in [(unwrap_causal_lm(self.policy), True)] + [(r, True) for r in self.references.values()]:
            for layer in model.model.layers:
                fully_shard(layer, mesh=mesh, reshard_after_forward=reshard)
            fully_shard(model.model, mesh=mesh, reshard_after_forward=reshard)
            fully_shard(model.lm_head, mesh=mesh, reshard_after_forward=reshard)


def main(kind: str, data_dir: str, out_dir: str) -> None:
    L.seed_everything(0, verbose=False)
    strategy = Recording(alpha=0.5, tau=2)
    cls = FSDP2Module if kind == "fsdp" else PreferenceModule
    source = UntiedTiny(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=128)
    module = cls(model=source, reference=strategy, lr=1e-2, warmup_steps=0, schedule="constant")
    if kind == "fsdp":
        from lightning.pytorch.strategies import ModelParallelStrategy

        dist = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    else:
        dist = "ddp"
    trainer = L.Trainer(
        max_steps=4, accelerator="cpu", devices=2, strategy=dist, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    )
    dm = PreferenceDataModule(
        train_path=f"{data_dir}/train.jsonl", val_path=f"{data_dir}/val.jsonl", batch_size=4,
        max_length=64, max_prompt_length=32, chat_template=False,
    )
    trainer.fit(module, datamodule=dm)
    reference = {k: full(v) for k, v in strategy.model(module).named_parameters()}
    policy = {k: full(v) for k, v in unwrap_causal_lm(module.policy).named_parameters()}
    expected = {}
    for name, start in strategy.initial.items():
        value = start.clone()
        for snap in strategy.snapshots:
            value.lerp_(snap[name], 0.5)
        expected[name] = value
    torch.save(
        {"reference": reference, "expected": expected, "policy": policy, "updates": strategy.updates,
         "distance": strategy.distance, "sharded": any(hasattr(p, "to_local") for p in module.policy.parameters()),
         "reference_sharded": all(hasattr(p, "to_local") for p in strategy.model(module).parameters())},
        Path(out_dir) / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
