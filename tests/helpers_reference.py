"""Shared helpers for the reference-strategy tests: a tiny policy, synthetic data, short fits."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from benchmarks.demos.sort_task import write_task
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.data.sources import read_jsonl
from lit_align.models import TinyModel
from lit_align.module import PreferenceModule
from tests.conftest import quiet_trainer

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=128)


def tiny_source(seed: int = 0) -> TinyModel:
    return TinyModel(seed=seed, **TINY)


def data(tmp_path: Path, batch_size: int = 4, ref_columns: bool = False, **kwargs) -> PreferenceDataModule:
    paths = write_task(tmp_path / "data", train=64, val=16, test=16)
    if ref_columns:  # made-up reference log-probs "computed elsewhere": -0.5 per character
        for path in paths.values():
            rows = read_jsonl(path)
            for r in rows:
                r["ref_chosen_logps"], r["ref_rejected_logps"] = -0.5 * len(r["chosen"]), -0.5 * len(r["rejected"])
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return PreferenceDataModule(
        train_path=str(paths["train"]), val_path=str(paths["val"]), batch_size=batch_size,
        max_length=64, max_prompt_length=32, chat_template=False, **kwargs,
    )


def module(reference, loss=None, source=None, lr: float = 1e-2) -> PreferenceModule:
    # a large lr so that a few steps move the weights visibly; constant schedule keeps the derivations simple
    return PreferenceModule(model=source or tiny_source(), loss=loss, reference=reference, lr=lr, warmup_steps=0, schedule="constant")


def trainer(root: Path, max_steps: int, accumulate: int = 1, **kwargs) -> L.Trainer:
    defaults = dict(
        max_steps=max_steps, accumulate_grad_batches=accumulate, num_sanity_val_steps=0, limit_val_batches=0,
        deterministic=True, default_root_dir=str(root),
    )
    return quiet_trainer(**{**defaults, **kwargs})


def fit(tmp_path: Path, reference, steps: int, accumulate: int = 1, loss=None, seed: int = 0, dm=None, source=None, **kwargs):
    L.seed_everything(seed, verbose=False)
    m = module(reference, loss=loss, source=source)
    t = trainer(tmp_path / "run", steps, accumulate, **kwargs)
    t.fit(m, datamodule=dm or data(tmp_path))
    return m, t


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_tensors_equal(a, b, where: str = "") -> None:
    """Bit-for-bit equality of nested dicts / lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))[:5]}"
        for k in a:
            assert_tensors_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tensors_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(m1, t1, m2, t2) -> None:
    """Policy and reference weights, optimizer and scheduler state, loss buffers, the strategy's counters."""
    assert t1.global_step == t2.global_step
    assert_tensors_equal(m1.policy.state_dict(), m2.policy.state_dict(), "policy")
    assert_tensors_equal(t1.optimizers[0].state_dict(), t2.optimizers[0].state_dict(), "optimizer")
    assert_tensors_equal(t1.lr_scheduler_configs[0].scheduler.state_dict(), t2.lr_scheduler_configs[0].scheduler.state_dict(), "scheduler")
    assert_tensors_equal(m1.loss.state_dict(), m2.loss.state_dict(), "loss")
    assert_tensors_equal(m1.reference.state_dict(), m2.reference.state_dict(), "reference")  # its models and counters


def run_with_resume(tmp_path, make_reference, make_loss, accumulate: int = 1, n: int = 6, k: int = 3, make_source=None, **dm_kwargs):
    """Fit n steps saving a checkpoint at step k; then a fresh module resumes from it to step n."""
    L.seed_everything(0, verbose=False)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=k, save_top_k=-1, filename="{step}")
    full = module(make_reference(tmp_path), loss=make_loss(), source=make_source() if make_source else None)
    t_full = trainer(tmp_path / "full", n, accumulate, callbacks=[ckpt], enable_checkpointing=True)
    t_full.fit(full, datamodule=data(tmp_path, **dm_kwargs))

    L.seed_everything(123, verbose=False)  # a different seed: nothing may depend on the process's RNG
    resumed = module(make_reference(tmp_path), loss=make_loss(), source=make_source() if make_source else None)
    t_res = trainer(tmp_path / "resumed", n, accumulate)
    t_res.fit(resumed, datamodule=data(tmp_path, **dm_kwargs), ckpt_path=str(tmp_path / "ckpt" / f"step={k}.ckpt"), weights_only=False)  # our own file; hparams hold objects
    return full, t_full, resumed, t_res
