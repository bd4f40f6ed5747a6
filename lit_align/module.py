"""``PreferenceModule``: a policy, a reference strategy and one loss."""

from __future__ import annotations

import inspect
import warnings
from typing import Literal

import lightning as L
import torch
from torch import nn

from lit_align.batch import LossOutput, PreferenceBatch, SequenceLogps
from lit_align.errors import CheckpointMismatchError, ConfigError, NonFiniteLossError, check_number
from lit_align.final_logits import final_logits, is_fsdp2, unwrap_causal_lm
from lit_align.logprobs import run_model
from lit_align.losses import DPO, PreferenceLoss
from lit_align.models import ModelSource
from lit_align.optim import OptimizerFactory, SchedulerFactory, build_optimizer, check_optimizer, check_scheduler
from lit_align.reference import FrozenReference, ReferenceStrategy
from lit_align.reference.base import ReferenceContext, ReferenceData, check_compatible


class PreferenceModule(L.LightningModule):
    """Tunes a causal LM on preference pairs.

    One training step: the reference's log-probs (or none), a single concatenated forward of the
    policy over chosen and rejected rows, the loss, and after each real optimizer step the reference
    strategy's update. The policy, the loss and the reference strategy are submodules, so
    everything a checkpoint needs to resume exactly is in ``state_dict``: policy weights, loss
    buffers, a moving reference's weights and counters.
    """

    def __init__(
        self,
        model: ModelSource | None = None,
        loss: PreferenceLoss | None = None,
        reference: ReferenceStrategy | None = None,
        lr: float = 5e-6,
        weight_decay: float = 0.0,
        betas: tuple[float, float] | None = None,
        warmup_steps: int | float = 0.1,
        schedule: Literal["cosine", "linear", "constant"] = "cosine",
        min_lr_ratio: float = 0.0,
        activation_checkpointing: bool = False,
        logps_chunk_size: int | None = 1024,
        compile: bool = False,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        """
        Args:
            model: Where the policy comes from: ``lit_align.models.PretrainedModel`` (HF dir / name),
                ``TinyModel`` or ``lit_align.peft_config.LoraSource``; None only for ``cli.py evaluate`` of an
                exported HF directory, which then is the model.
            loss: The loss (one module; sum several with ``lit_align.losses.WeightedLoss``). Default: DPO, beta
                0.1.
            reference: Reference strategy. Default: a frozen copy of the policy's starting weights.
            lr: Peak learning rate of the optimizer (AdamW by default), set on every parameter group.
            weight_decay: Weight decay of the optimizer's matrices; never applied to biases and norm scales.
            betas: Adam-family betas (beta1, beta2) passed to the optimizer; null: the optimizer's own
                (AdamW: 0.9, 0.999).
            warmup_steps: Linear warmup of the built-in schedule: optimizer steps if >= 1, else a fraction of
                all optimizer steps.
            schedule: Decay of the built-in schedule after warmup: cosine, linear or constant.
            min_lr_ratio: Final learning rate of the built-in schedule as a fraction of the peak.
            activation_checkpointing: Recompute decoder-layer activations in the backward pass (less memory,
                about 30% slower).
            logps_chunk_size: Sequence positions per lm_head chunk in the log-prob pass (memory O(chunk x
                vocab)); None computes the full logits in one pass without recomputation (the usual way, for
                comparison).
            compile: torch.compile each decoder layer of the policy (one graph reused by every layer; keys
                unchanged).
            optimizer: The optimizer, by class_path (any torch.optim.Optimizer, or bitsandbytes.optim.AdamW8bit on
                CUDA) with its own init_args (momentum, eps, ...); its lr and weight_decay come from model.lr and
                model.weight_decay. Null: torch.optim.AdamW.
            scheduler: A learning-rate scheduler by class_path (e.g. torch.optim.lr_scheduler.StepLR), stepped
                every optimizer step, replacing the built-in warmup_steps / schedule / min_lr_ratio schedule. Null:
                the built-in schedule.
        """
        super().__init__()
        with warnings.catch_warnings():  # loss / reference are saved as config (class_path), not as modules
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        self.model_source = model
        self.loss = loss if loss is not None else DPO()
        self.reference = reference if reference is not None else FrozenReference()
        self.lr = lr
        self.weight_decay = weight_decay
        self.betas = betas
        self.warmup_steps = warmup_steps
        self.schedule = schedule
        self.min_lr_ratio = min_lr_ratio
        self.activation_checkpointing = activation_checkpointing
        self.logps_chunk_size = logps_chunk_size
        self.compile = compile
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.policy: nn.Module | None = None
        self._check_settings()
        self.tokenizer = model.load_tokenizer() if model is not None else None
        check_compatible(self.loss, self.reference)

    def _check_settings(self) -> None:
        """Refuse optimiser settings that cannot work, naming them (torch's own errors do not)."""
        check_number("lr", self.lr, 0)
        check_number("weight_decay", self.weight_decay, 0)
        if self.betas is not None:
            if not (isinstance(self.betas, (tuple, list)) and len(self.betas) == 2):
                raise ConfigError(f"betas must be two numbers (AdamW's beta1, beta2), got {self.betas!r}")
            for i, beta in enumerate(self.betas):
                check_number(f"betas[{i}]", beta, 0, 1, high_open=True)
        check_number("warmup_steps", self.warmup_steps, 0)
        if isinstance(self.warmup_steps, float) and self.warmup_steps >= 1 and not self.warmup_steps.is_integer():
            raise ConfigError(f"warmup_steps must be a fraction in [0, 1) of all steps or a whole number of steps, got {self.warmup_steps}")
        check_number("min_lr_ratio", self.min_lr_ratio, 0, 1)
        if self.logps_chunk_size is not None:
            check_number("logps_chunk_size", self.logps_chunk_size, 1, integer=True)
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"schedule must be cosine, linear or constant, got {self.schedule!r}")
        check_optimizer(self.optimizer_factory, self.lr, self.weight_decay, self.betas)
        defaults = inspect.signature(PreferenceModule.__init__).parameters  # the built-in schedule's settings
        changed = [k for k in ("warmup_steps", "schedule", "min_lr_ratio") if getattr(self, k) != defaults[k].default]
        check_scheduler(self.scheduler_factory, changed)

    # --- building -------------------------------------------------------------------------------
    def configure_model(self) -> None:
        # Idempotent: Lightning may call it more than once, and `cli.py evaluate` calls it before the
        # trainer is attached (to load weights into the unsharded module first). Each step runs once.
        if self.model_source is None:
            raise ValueError("no policy model: set model (e.g. --model.model.class_path lit_align.models.PretrainedModel)")
        if self.policy is None:
            self.policy = self.model_source.load_model()
            self.policy.train()  # from_pretrained returns eval mode, and checkpointing only acts in train mode
            if self.activation_checkpointing:
                unwrap_causal_lm(self.policy).activation_checkpointing_enable({"use_reentrant": False})
            if self.compile:  # module.compile() keeps state_dict keys (torch.compile(module) would prefix them)
                from lit_align.sharding import decoder_layers

                for layer in decoder_layers(unwrap_causal_lm(self.policy)):
                    layer.compile(dynamic=True)
        # Before sharding (a reference copies the unsharded policy); again on a later call, since a
        # cached reference can fill its tables only once a trainer and its data are attached.
        self.reference.configure(self.policy, self.reference_context())
        for model in (self.policy, *self.reference.reference_models()):  # at setup, and before sharding: a model
            final_logits(model)  # whose logits post-processing the chunked head cannot repeat fails here, not mid-run
        if self._device_mesh is not None and not is_fsdp2(unwrap_causal_lm(self.policy)):
            from lit_align.sharding import shard_fsdp2  # ModelParallelStrategy: FSDP2 over the data-parallel mesh

            shard_fsdp2(self, self._device_mesh["data_parallel"])

    def reference_context(self) -> ReferenceContext:
        """What the reference strategy may know of this run: the policy's source and tokenizer, the data."""
        data, trainer = None, self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if hasattr(datamodule, "tokenized_splits"):  # set up by now: Lightning runs setup before configure_model
            data = ReferenceData(datamodule.tokenized_splits(), datamodule.padded_collator(), trainer.global_rank,
                                 lambda: trainer.strategy.barrier("reference_cache"))
        return ReferenceContext(self.model_source, self.tokenizer, self.logps_chunk_size, data)

    def configure_optimizers(self):
        config = build_optimizer(
            self.policy, self.trainer.estimated_stepping_batches, self.lr, self.weight_decay, self.betas,
            self.warmup_steps, self.schedule, self.min_lr_ratio, self.optimizer_factory, self.scheduler_factory,
        )
        # The post-hook runs only when the optimizer really stepped: fp16's GradScaler skips the step
        # on non-finite gradients, and then no reference or loss state may move (optimizer_step).
        self._applied_steps = 0
        config["optimizer"].register_step_post_hook(self._count_applied_step)
        return config

    def _count_applied_step(self, optimizer, args, kwargs) -> None:
        self._applied_steps += 1

    # --- one step -------------------------------------------------------------------------------
    def forward_step(self, batch: PreferenceBatch) -> tuple[SequenceLogps, SequenceLogps | None, LossOutput]:
        request, ref_request = self.loss.logps_request, self.loss.reference_logps_request
        if not self.loss.uses_rejected and not batch.packed:
            batch = batch.chosen_only()  # SFT alone: forwarding the rejected rows would double the cost for nothing
        reference, ref_pass = None, None
        if self.loss.requires_reference_logits:  # epsilon-DPO: the reference's logits are mixed into the policy's
            ref_pass = self.reference.model_pass(self.policy, batch)
            reference = ref_pass.logps(batch, ref_request, self.logps_chunk_size)
        elif self.loss.requires_reference:
            reference = self.reference.logps(self.policy, batch, ref_request)
        policy = run_model(self.policy, batch).logps(batch, request, self.logps_chunk_size, mix=ref_pass)
        if ref_pass is not None:
            ref_pass.release()
        return policy, reference, self.loss(policy, reference, batch)

    def training_step(self, batch: PreferenceBatch, batch_idx: int) -> torch.Tensor:
        policy, reference, out = self.forward_step(batch)
        loss = out.losses.mean()
        metrics = {"loss": loss.detach(), **self.step_metrics(policy, reference, out)}
        metrics.update({k: torch.as_tensor(v, dtype=torch.float32).clone() for k, v in self.reference.metrics().items()})
        self._unchecked.append((loss.detach(), metrics, batch_idx))  # checked once, before the optimizer step
        self.log_dict({f"train/{k}": v for k, v in metrics.items()}, batch_size=batch.num_pairs, prog_bar=False)
        self.log("train_loss", loss.detach(), batch_size=batch.num_pairs, prog_bar=True, logger=False)
        return loss

    check_gradients: bool = True
    """Stop before an optimizer step whose gradients hold a NaN / inf (see ``on_before_optimizer_step``);
    off only to measure the check's cost (benchmarks/finite_check_cost.py)."""

    @property
    def _unchecked(self) -> list[tuple[torch.Tensor, dict[str, torch.Tensor], int]]:
        """(loss, metrics, batch index) of the micro-batches since the last optimizer step, not yet checked."""
        if not hasattr(self, "_unchecked_batches"):
            self._unchecked_batches = []
        return self._unchecked_batches

    def on_before_optimizer_step(self, optimizer) -> None:
        self.stop_if_not_finite(optimizer)

    def stop_if_not_finite(self, optimizer) -> None:
        """Raise ``NonFiniteLossError`` before an optimizer step when, on any rank, the loss of one of its
        micro-batches or one of the gradients is NaN / inf.

        One NaN gradient applied by AdamW ruins every weight it touches (and the moments) for good;
        stopping here, before the step, leaves the last checkpoint written intact. Losses and gradients
        are folded into one flag on the device, all-reduced (one tiny collective) and read once: one
        host sync per optimizer step, as the loss check alone had. Gradients are tested by their max-abs
        norm (NaN and inf propagate through it, and it cannot overflow as a sum of squares can).
        Under fp16 the GradScaler skips steps with non-finite gradients itself, so there only the
        losses are checked.
        """
        pending, self._unchecked_batches = self._unchecked, []
        trainer = self._trainer
        flags = [torch.stack([loss.float() for loss, _, _ in pending]).isfinite().all()] if pending else []
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None) if trainer is not None else None
        if self.check_gradients and scaler is None:
            # a sharded (FSDP2 DTensor) gradient is tested on this rank's shard: the all-reduce below covers the rest
            grads = [g.to_local() if hasattr(g, "to_local") else g
                     for group in optimizer.param_groups for p in group["params"] if (g := p.grad) is not None]
            if grads:
                flags.append(torch.stack(torch._foreach_norm(grads, float("inf"))).isfinite().all())
        if not flags:
            return
        bad = ~torch.stack([f.to(self.device) for f in flags]).all()
        if trainer is not None:  # one collective: the sum of every rank's flag
            bad = trainer.strategy.reduce(bad.to(torch.float32), reduce_op="sum") > 0
        if not bool(bad):
            return
        step = trainer.global_step if trainer is not None else None
        epoch = trainer.current_epoch if trainer is not None else None
        where = f"at global step {step} (epoch {epoch}"
        for loss, metrics, batch_idx in pending:
            if not bool(torch.isfinite(loss)):
                shown = ", ".join(f"{k} {float(v):.4g}" for k, v in sorted(metrics.items()))
                raise NonFiniteLossError(
                    f"non-finite training loss {where}, batch {batch_idx}; {step} optimizer steps applied, the last "
                    f"checkpoint is intact) with loss {self.loss.describe()}: {shown}. Lower model.lr, or check the data "
                    "(ref_*_logps / score columns) and the loss settings")
        batches = ", ".join(str(b) for _, _, b in pending)
        losses = ", ".join(f"{float(loss):.4g}" for loss, _, _ in pending)
        raise NonFiniteLossError(
            f"non-finite gradients {where}, batches {batches or '?'}; {step} optimizer steps applied, the last checkpoint "
            f"is intact; the step was not taken) with finite loss {losses or '?'} ({self.loss.describe()}): the run "
            "diverged. Lower model.lr, or clip gradients (trainer.gradient_clip_val)")

    def optimizer_step(self, *args, **kwargs) -> None:
        before = getattr(self, "_applied_steps", None)
        try:
            super().optimizer_step(*args, **kwargs)
        except RuntimeError as err:
            # torch's optimizers turn a step size beyond float range (model.lr 1e38: lr / bias correction)
            # into this, raised mid-update; nothing after it is saved, so the last checkpoint is intact
            if "without overflow" not in str(err):
                raise
            step = self.trainer.global_step if self._trainer is not None else None
            raise NonFiniteLossError(
                f"the optimizer step at global step {step} overflowed ({str(err).strip()}): model.lr {self.lr!r} is too "
                "large for the optimizer's arithmetic; the run stopped, the last checkpoint is intact. Lower model.lr") from None
        # A skipped step (fp16 overflow) leaves the policy as it was: TR-DPO's update and epsilon-DPO's
        # baseline must not fire on it. (None: optimizers built elsewhere, assumed applied.)
        applied = before is None or self._applied_steps > before
        # Here, not in on_train_batch_end: Lightning runs callbacks' batch-end hooks (ModelCheckpoint)
        # before the module's, so a later update would be checkpointed one step behind.
        self.loss.after_optimizer_step(applied)
        if applied:
            self.reference.after_optimizer_step(self.policy, self.trainer.global_step + 1)

    token_mean_metrics = frozenset({"kl/per_token"})
    """Metrics of ``step_metrics`` that are means over completion tokens; every other one is a mean over pairs."""

    @torch.no_grad()
    def step_metrics(self, policy: SequenceLogps, reference: SequenceLogps | None, out: LossOutput) -> dict[str, torch.Tensor]:
        """Detached batch means: over pairs, or over completion tokens for ``token_mean_metrics``."""
        metrics = {k: v.float().mean() for k, v in out.metrics.items()}
        metrics["logps/chosen"] = policy.chosen.detach().mean()
        if not self.loss.uses_rejected:  # the rejected rows were not forwarded (SFT alone)
            return metrics
        metrics["logps/rejected"] = policy.rejected.detach().mean()
        metrics["logps/accuracies"] = (policy.chosen > policy.rejected).float().mean()  # likelihood ranking
        if reference is not None:
            # per-token estimate of KL(policy || reference) on the sampled completions (chosen and rejected)
            tokens = (policy.chosen_tokens + policy.rejected_tokens).sum().clamp(min=1)
            diff = (policy.chosen - reference.chosen).sum() + (policy.rejected - reference.rejected).sum()
            metrics["kl/per_token"] = diff.detach() / tokens
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._val_sums: dict[str, torch.Tensor] = {}  # metric name -> sum of batch value x batch weight
        self._val_weights: dict[str, torch.Tensor] = {}  # metric name -> sum of batch weights (pairs or tokens)

    def validation_step(self, batch: PreferenceBatch, batch_idx: int) -> None:
        # The forward covers every row, sampler repeats included: under FSDP it is a collective that
        # every rank must run for every batch. Repeats are set aside only afterwards.
        policy, reference, out = self.forward_step(batch)
        real_pairs = batch.num_pairs
        if batch.has_padding:
            keep = ~batch.is_padding
            real_pairs = int(keep.sum())
            if real_pairs:  # the loss again on the real pairs alone: batch-level losses (AOT sorts
                policy = policy.select_pairs(keep)  # the batch) must not see the repeats either
                reference = reference.select_pairs(keep) if reference is not None else None
                out = self.loss(policy, reference, batch.select_pairs(keep))
            # else: only repeats. The metrics are still computed, so that every rank holds the same
            # names for the all-reduce at epoch end, but they weigh 0.
        metrics = {"loss": out.losses.mean().detach(), **self.step_metrics(policy, reference, out)}
        pairs = torch.tensor(float(real_pairs), device=self.device)
        tokens = (policy.chosen_tokens + policy.rejected_tokens).sum().float() if real_pairs else torch.zeros_like(pairs)
        for name, value in metrics.items():  # batch means, weighted back to sums over pairs (or tokens)
            weight = tokens if name in self.token_mean_metrics else pairs
            weighted = value.float() * weight if real_pairs else torch.zeros_like(pairs)  # 0, even for a NaN
            self._val_sums[name] = self._val_sums.get(name, 0.0) + weighted
            self._val_weights[name] = self._val_weights.get(name, 0.0) + weight

    def on_validation_epoch_end(self) -> None:
        if not self._val_sums:
            return
        names = sorted(self._val_sums)
        # One all-reduce of every (weighted sum, weight): each epoch value is the mean over the split's
        # pairs (over completion tokens for token_mean_metrics), not a mean of per-rank or per-batch
        # means. Every rank runs the same number of batches (the sampler repeats up to world_size - 1
        # pairs to even them out, and FSDP forwards are collectives), but the repeats are marked
        # (PreferenceBatch.is_padding) and weigh 0 in validation_step, so each pair counts exactly once.
        stacked = torch.stack([self._val_sums[n] for n in names] + [self._val_weights[n] for n in names])
        totals = self.trainer.strategy.reduce(stacked, reduce_op="sum")
        values = {f"val/{n}": totals[i] / totals[len(names) + i] for i, n in enumerate(names)}
        self.log_dict(values, sync_dist=False)
        self.log("val_loss", values["val/loss"], prog_bar=True, logger=False)

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    def test_step(self, batch: PreferenceBatch, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    # --- checkpoints ----------------------------------------------------------------------------
    def reference_model_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of the reference models' weights (``reference.model.``, ``reference.ensemble.``)."""
        return tuple(f"reference.{name}." for name, _ in self.reference.named_children())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A frozen reference is rebuilt from its source, so its weights stay out of checkpoints,
        # except sharded (DCP) ones, whose loader fails on keys left out.
        if not (self.reference.checkpoint_weights or self._device_mesh is not None):
            models = self.reference_model_prefixes()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(models)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        upgrade_checkpoint(checkpoint)  # Lightning calls this before it loads the state dict

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        models = self.reference_model_prefixes()  # a frozen reference's weights are rebuilt, not loaded
        missing = [k for k in result.missing_keys if not k.startswith(models)]
        if strict and (missing or result.unexpected_keys):
            raise CheckpointMismatchError(f"checkpoint does not match the configured module (another model size or loss?): missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
        return result


def upgrade_checkpoint(checkpoint: dict) -> dict:
    """Rewrite, in place, a checkpoint from before reference strategies owned their models.

    Those kept reference weights under ``references.<key>.`` (``frozen``, ``moving``, ``unconditional``,
    ``ref<k>`` for ensembles) and a moving reference's counters in ``checkpoint["reference_strategy"]``;
    now they are ``reference.model.`` / ``reference.ensemble.<k>.`` weights and ``reference.<name>``
    buffers. A current checkpoint is left as it is.
    """
    state, counters = checkpoint.get("state_dict", {}), checkpoint.pop("reference_strategy", None)
    for key in [k for k in state if k.startswith("references.")]:
        name, rest = key[len("references.") :].split(".", 1)
        target = f"ensemble.{name[3:]}" if name.startswith("ref") and name[3:].isdigit() else "model"
        state[f"reference.{target}.{rest}"] = state.pop(key)
    for name, value in (counters or {}).items():
        dtype = torch.long if name in ("updates", "last_step") else torch.float64
        state[f"reference.{name}"] = torch.tensor(value, dtype=dtype)
    return checkpoint
