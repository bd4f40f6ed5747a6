"""FSDP2 sharding of the policy and every reference model (Lightning's ModelParallelStrategy).

Each decoder layer becomes its own FSDP unit and the whole causal LM the root unit (so tied
embeddings stay in one group). References are sharded exactly like the policy, which keeps EMA /
sync updates shard-local: parameter shards of the same name live on the same rank.
A reference runs only under no_grad, so it must reshard after forward itself (an FSDP2 root used
only without grad otherwise stays unsharded).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Callable, Literal, TypeVar

from torch import nn

from lit_align.logprobs import unwrap_causal_lm

T = TypeVar("T")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks named by the model's ``_no_split_modules`` (LlamaDecoderLayer, ...)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"cannot find decoder layers to shard in {type(model).__name__} (no _no_split_modules)")
    return layers


def shard_fsdp2(module, mesh) -> None:
    from torch.distributed.fsdp import fully_shard

    models = [unwrap_causal_lm(module.policy)] + module.reference.reference_models()
    for model in models:
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=mesh, reshard_after_forward=True)
        fully_shard(model, mesh=mesh, reshard_after_forward=True)


def _module_wrap_policy() -> type:
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return ModuleWrapPolicy


class DecoderLayerPolicy(_module_wrap_policy()):
    """FSDP1 auto-wrap policy: every module whose class name ends in ``suffix`` is its own unit.

    Model-agnostic (LlamaDecoderLayer, Qwen2DecoderLayer, MistralDecoderLayer, Gemma2DecoderLayer
    ...), so ``configs/strategy/fsdp.yaml`` needs no model-specific import path. The classes are
    found when FSDP applies the policy to the built model.
    """

    def __init__(self, suffix: str = "DecoderLayer") -> None:
        """
        Args:
            suffix: Class-name suffix of the repeated blocks to wrap.
        """
        super().__init__([])
        self.suffix = suffix

    def _run_policy(self, root_module: nn.Module, ignored_modules, root_kwargs):
        self._module_classes = tuple({type(m) for m in root_module.modules() if type(m).__name__.endswith(self.suffix)})
        self._module_classes_str = str(self._module_classes)
        return super()._run_policy(root_module, ignored_modules, root_kwargs)


def _model_parallel_strategy() -> type:
    from lightning.pytorch.strategies import ModelParallelStrategy

    return ModelParallelStrategy


class FSDP2Strategy(_model_parallel_strategy()):
    """Lightning's ``ModelParallelStrategy`` as pure FSDP2: every process of every node shards the model.

    ``ModelParallelStrategy``'s "auto" sizes mean data parallel across nodes and tensor parallel
    within a node; PreferenceModule applies no tensor parallelism, so here "auto" data-parallel
    size is the whole world and the tensor-parallel size defaults to 1.
    """

    def __init__(
        self,
        data_parallel_size: Literal["auto"] | int = "auto",
        tensor_parallel_size: int = 1,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
    ) -> None:
        """
        Args:
            data_parallel_size: Devices in the data-parallel (FSDP2 sharding) group; "auto": the whole world
                (nodes x processes per node / tensor_parallel_size).
            tensor_parallel_size: Devices in a tensor-parallel group; 1 (the default) is none, as
                PreferenceModule applies no tensor parallelism.
            save_distributed_checkpoint: True: each rank saves its own shard (a checkpoint folder with one file
                per rank); False: the full weights and optimizer state are gathered on rank 0 into one file.
            process_group_backend: torch.distributed backend (nccl, gloo); None: Lightning's default for the
                device (nccl on CUDA, else gloo).
        """
        super().__init__(data_parallel_size, tensor_parallel_size, save_distributed_checkpoint, process_group_backend)

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes // self._tensor_parallel_size
        super().setup_environment()


def full_state_dict(trainer) -> dict:
    """The LightningModule's full (unsharded) state dict, on CPU; a collective: call it on every rank.

    ``strategy.lightning_module_state_dict()`` returns local shards when checkpoints are distributed
    (FSDP2 / FSDP1 with sharded state dicts); an export needs the gathered weights. Non-zero ranks
    may receive an empty dict.
    """
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    strategy = trainer.strategy
    if isinstance(strategy, ModelParallelStrategy):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(strategy.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return retie(strategy.lightning_module, state)
    if isinstance(strategy, FSDPStrategy):
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
        with FSDP.state_dict_type(strategy.model, StateDictType.FULL_STATE_DICT, config):
            return strategy.model.state_dict()
    if _is_zero3(strategy):
        import deepspeed  # ZeRO-3 partitions parameters: gather them (every rank takes part)

        module = strategy.lightning_module
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        return retie(module, state)
    return strategy.lightning_module_state_dict()


def _is_zero3(strategy) -> bool:
    return type(strategy).__name__ == "DeepSpeedStrategy" and bool(getattr(strategy, "zero_stage_3", False))


def parameters_sharded(strategy) -> bool:
    """True when no rank holds the full weights (FSDP2, FSDP1, DeepSpeed ZeRO-3): a forward is then a collective."""
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    return isinstance(strategy, (ModelParallelStrategy, FSDPStrategy)) or _is_zero3(strategy)


def policy_state(state: dict, prefix: str = "policy.") -> dict:
    """The policy's entries of a PreferenceModule state dict, with the module prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def unsharded_policy(trainer, module) -> nn.Module | None:
    """On global rank 0, a plain (unsharded) copy of the trained policy on the module's device; None elsewhere.

    A collective (the full weights are gathered): call it on every rank. The copy is built by the
    module's model source, so it has the policy's structure (LoRA adapters included), and then takes
    the gathered tensors as they are (``assign``: their dtype, not copied; the source's own freshly
    built weights are dropped). Peak host memory on rank 0 is therefore about two full models.
    """
    state = full_state_dict(trainer)
    if not trainer.is_global_zero:
        return None
    model = module.model_source.load_model()
    model.load_state_dict(policy_state(state), strict=True, assign=True)
    return model.to(module.device)


def run_on_rank_zero(trainer, module, fn: Callable[[nn.Module], T], wait_timeout_s: float = 24 * 3600) -> T | None:
    """``fn(policy)`` on global rank 0 with a policy it can run alone; None on the other ranks.

    One process: the module's own policy. Several: sharded weights (FSDP2, FSDP1, ZeRO-3) make a
    forward a collective that rank 0 cannot run alone, so every rank first gathers the full weights
    (``unsharded_policy``) and rank 0 runs ``fn`` on a plain copy; replicated weights (DDP) are used
    as they are. The other ranks then wait at a barrier of a gloo group of their own, whose timeout
    (``wait_timeout_s``) can outlast the default 30 minutes an evaluation suite may need, so no
    process tears the process group down under rank 0. Call it on every rank.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return fn(module.policy)
    # a collective on every rank when sharded; the copy exists on rank 0 only
    policy = unsharded_policy(trainer, module) if parameters_sharded(trainer.strategy) else module.policy
    waiting = dist.new_group(backend="gloo", timeout=timedelta(seconds=wait_timeout_s))
    try:
        return fn(policy) if trainer.is_global_zero else None
    finally:  # rank 0 arrives here even when fn fails, so the others never wait out the timeout
        dist.barrier(group=waiting)
        dist.destroy_process_group(waiting)


def retie(module: nn.Module, state: dict) -> dict:
    """Make entries of tied parameters (embeddings = head) one tensor again after a gather.

    A gathered state dict holds a separate copy per name; ``save_pretrained`` drops a tied
    duplicate only when both names share storage, so without this an export carries the head twice.
    """
    names: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    for group in names.values():
        for name in group[1:]:
            if group[0] in state and name in state:
                state[name] = state[group[0]]
    return state
