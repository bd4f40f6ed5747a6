"""Checkpoints written before reference strategies owned their models still resume, bit-exactly."""

from __future__ import annotations

import lightning as L
import torch

from lit_align.module import upgrade_checkpoint
from lit_align.reference import MovingReference
from tests.helpers_reference import assert_same_run, data, module, run_with_resume, trainer


def to_earlier_layout(checkpoint: dict) -> dict:
    """The layout of those versions: ``references.moving.*`` weights, counters as plain numbers in
    ``checkpoint["reference_strategy"]``."""
    state = checkpoint["state_dict"]
    checkpoint["reference_strategy"] = {name: state.pop(f"reference.{name}").item() for name in ("updates", "last_step", "distance", "drift")}
    for key in [k for k in state if k.startswith("reference.model.")]:
        state["references.moving." + key[len("reference.model."):]] = state.pop(key)
    return checkpoint


def test_a_trdpo_checkpoint_of_the_earlier_layout_resumes_exactly(tmp_path):
    """alpha 0.5, tau 2: a 6-step run checkpointed at step 3 (one update done); the step-3 file, rewritten
    in the earlier layout, resumes to the same weights, optimizer state and counters as the run itself."""
    full, t_full, _, _ = run_with_resume(tmp_path, lambda tmp: MovingReference(alpha=0.5, tau=2), lambda: None)
    earlier = to_earlier_layout(torch.load(tmp_path / "ckpt" / "step=3.ckpt", weights_only=False))
    assert earlier["reference_strategy"]["updates"] == 1 and not any(k.startswith("reference.") for k in earlier["state_dict"])
    torch.save(earlier, tmp_path / "earlier.ckpt")

    L.seed_everything(123, verbose=False)
    resumed = module(MovingReference(alpha=0.5, tau=2))
    t_res = trainer(tmp_path / "from_earlier", 6)
    t_res.fit(resumed, datamodule=data(tmp_path), ckpt_path=str(tmp_path / "earlier.ckpt"), weights_only=False)
    assert_same_run(full, t_full, resumed, t_res)
    assert int(resumed.reference.updates) == 3


def test_ensemble_and_frozen_keys_are_renamed_and_current_checkpoints_left_alone():
    w = torch.ones(2)
    earlier = {"state_dict": {"references.frozen.lm_head.weight": w, "references.ref1.model.norm.weight": w, "policy.x": w}}
    assert set(upgrade_checkpoint(earlier)["state_dict"]) == {"reference.model.lm_head.weight", "reference.ensemble.1.model.norm.weight", "policy.x"}
    current = {"state_dict": {"reference.model.a": w, "reference.updates": torch.tensor(2), "policy.x": w}}
    assert upgrade_checkpoint({"state_dict": dict(current["state_dict"])}) == current
