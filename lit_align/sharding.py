"""FSDP2 sharding of the policy and every reference model (Lightning's ModelParallelStrategy).

Each decoder layer becomes its own FSDP unit and the whole causal LM the root unit (so tied
embeddings stay in one group). References are sharded exactly like the policy, which keeps EMA /
sync updates shard-local: parameter shards of the same name live on the same rank.
A reference runs only under no_grad, so it must reshard after forward itself (an FSDP2 root used
only without grad otherwise stays unsharded).
"""

from __future__ import annotations

from torch import nn

from lit_align.logprobs import unwrap_causal_lm


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks named by the model's ``_no_split_modules`` (LlamaDecoderLayer, ...)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"cannot find decoder layers to shard in {type(model).__name__} (no _no_split_modules)")
    return layers


def shard_fsdp2(module, mesh) -> None:
    from torch.distributed.fsdp import fully_shard

    models = [unwrap_causal_lm(module.policy)] + list(module.references.values())
    for model in models:
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=mesh, reshard_after_forward=True)
        fully_shard(model, mesh=mesh, reshard_after_forward=True)
