"""Two-process (gloo, CPU) run of a moving reference under DDP or FSDP2; launched by test_sharded_reference.py.

    python tests/helpers_reference_sharded.py {ddp|fsdp} DATA_DIR OUT_DIR [tied|untied] [module|decoder]

Each rank trains 4 steps with ``MovingReference(alpha=0.5, tau=2)`` (updates at steps 2 and 4),
records the FULL policy weights at each update, replays ``ref <- lerp(ref, theta, 0.5)`` on full
weights, and saves the reference it ended with (gathered to full tensors) next to the replay.
For FSDP2, ``PreferenceModule.configure_model`` shards policy and references alike
(``lit_align.sharding``), so the update runs on local shards only.
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
from tests.conftest import quiet_trainer


def full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


class UntiedTiny(TinyModel):
    """The tiny model with an untied head: FSDP2 units must not share a parameter across calls."""

    def config(self):
        config = super().config()
        config.tie_word_embeddings = False
        return config


def shard_decoder_layout(module, mesh) -> None:
    """Proposed replacement for ``lit_align.sharding.shard_fsdp2``: the units are the ones that are CALLED.

    ``logprobs.hidden_states`` calls ``get_decoder()`` and then the head directly, never the causal
    LM's own forward, so a unit on the causal LM root never runs its hooks (its embeddings stay
    DTensors: "aten.embedding.default got mixed torch.Tensor and DTensor"). Here each decoder layer
    and the decoder are units, and an untied head is a unit of its own; a tied head shares the
    decoder's unit (the decoder, as a root, stays unsharded after forward until its backward).
    """
    from torch.distributed.fsdp import fully_shard

    from lit_align.sharding import decoder_layers

    for model in [unwrap_causal_lm(module.policy)] + module.reference.reference_models():
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=mesh, reshard_after_forward=True)
        decoder, head = model.get_decoder(), model.get_output_embeddings()
        if head.weight is not decoder.get_input_embeddings().weight:
            fully_shard(head, mesh=mesh, reshard_after_forward=True)
        fully_shard(decoder, mesh=mesh, reshard_after_forward=True)


class Recording(MovingReference):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.initial: dict[str, torch.Tensor] = {}
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def after_optimizer_step(self, policy, step: int) -> None:
        if not self.initial:
            self.initial = {k: full(v) for k, v in self.model.named_parameters()}
        if step % self.tau == 0:
            self.snapshots.append({k: full(v) for k, v in unwrap_causal_lm(policy).named_parameters()})
        super().after_optimizer_step(policy, step)


def main(kind: str, data_dir: str, out_dir: str, tied: str = "tied", layout: str = "module") -> None:
    tied = tied == "tied"
    if layout == "decoder":
        import lit_align.sharding

        lit_align.sharding.shard_fsdp2 = shard_decoder_layout
    L.seed_everything(0, verbose=False)
    strategy = Recording(alpha=0.5, tau=2)
    source = (TinyModel if tied else UntiedTiny)(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=128)
    module = PreferenceModule(model=source, reference=strategy, lr=1e-2, warmup_steps=0, schedule="constant")
    if kind == "fsdp":
        from lightning.pytorch.strategies import ModelParallelStrategy

        dist = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    else:
        dist = "ddp"
    trainer = quiet_trainer(max_steps=4, devices=2, strategy=dist, num_sanity_val_steps=0, limit_val_batches=0)
    dm = PreferenceDataModule(
        train_path=f"{data_dir}/train.jsonl", val_path=f"{data_dir}/val.jsonl", batch_size=4,
        max_length=64, max_prompt_length=32, chat_template=False,
    )
    trainer.fit(module, datamodule=dm)
    reference = {k: full(v) for k, v in strategy.model.named_parameters()}
    policy = {k: full(v) for k, v in unwrap_causal_lm(module.policy).named_parameters()}
    expected = {}
    for name, start in strategy.initial.items():
        value = start.clone()
        for snap in strategy.snapshots:
            value.lerp_(snap[name], 0.5)
        expected[name] = value
    torch.save(
        {"reference": reference, "expected": expected, "policy": policy, "updates": int(strategy.updates),
         "distance": float(strategy.distance), "sharded": any(hasattr(p, "to_local") for p in module.policy.parameters()),
         "reference_sharded": all(hasattr(p, "to_local") for p in strategy.model.parameters())},
        Path(out_dir) / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(*sys.argv[1:6])
