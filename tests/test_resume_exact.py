"""Exact resume: a run stopped at step k and resumed from its checkpoint ends bit-identical to an
uninterrupted run (policy and reference weights, optimizer / scheduler state, loss buffers, the
strategy's own state), mid-epoch (16 batches per epoch; k = 3 or 5), for every strategy.

One fit of N steps saves a checkpoint at step k (ModelCheckpoint, as a stopped run would have);
a fresh module and Trainer then resume from it to step N.
"""

from __future__ import annotations

import pytest

from tests.helpers_reference import assert_same_run, run_with_resume, tiny_source
from lit_align.losses import DPO, SFT, EpsilonDPO
from lit_align.reference import (
    CachedReference,
    DatasetColumnReference,
    EMAReference,
    FrozenReference,
    MRPOReference,
    MovingReference,
    MultiReference,
    NoReference,
    SyncReference,
    UnconditionalReference,
)

CASES = {  # name: (reference factory given tmp_path, loss factory, accumulate_grad_batches)
    "none": (lambda tmp: NoReference(), SFT, 1),
    "frozen": (lambda tmp: FrozenReference(), DPO, 1),
    "ema": (lambda tmp: EMAReference(alpha=0.3, tau=1), DPO, 1),
    "sync": (lambda tmp: SyncReference(tau=2), DPO, 1),
    "trdpo_accumulate": (lambda tmp: MovingReference(alpha=0.5, tau=2), DPO, 2),
    "cached": (lambda tmp: CachedReference(cache_dir=str(tmp / "cache")), DPO, 1),
    "dataset_columns": (lambda tmp: DatasetColumnReference(), DPO, 1),
    "unconditional": (lambda tmp: UnconditionalReference(), DPO, 1),
    "mrpo": (lambda tmp: MRPOReference(source=tiny_source(seed=1)), DPO, 1),
    # epsilon-DPO: the baseline beta (a loss buffer) and the per-step window must resume exactly too
    "epsilon_dpo": (lambda tmp: FrozenReference(), lambda: EpsilonDPO(beta=0.1, eps=0.5), 1),
    "epsilon_dpo_trdpo_accumulate": (lambda tmp: MovingReference(alpha=0.5, tau=2), lambda: EpsilonDPO(beta=0.1, eps=0.5), 2),
    "multi_adaptive": (lambda tmp: MultiReference(sources=[None, tiny_source(seed=2)], adaptive=True), DPO, 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_resume_is_bit_identical(tmp_path, name):
    make_reference, make_loss, accumulate = CASES[name]
    dm_kwargs = {"ref_columns": True} if name == "dataset_columns" else {}
    full, t_full, resumed, t_res = run_with_resume(tmp_path, make_reference, make_loss, accumulate, **dm_kwargs)
    assert_same_run(full, t_full, resumed, t_res)
    if name in ("ema", "sync", "trdpo_accumulate"):
        assert resumed.reference.updates == full.reference.updates > 0
    if name.startswith("epsilon_dpo"):  # the baseline moved, so its resume is really tested
        assert float(resumed.loss.baseline_beta) == float(full.loss.baseline_beta) != 0.1
    if name == "cached":  # the resumed run found the cache of the first: no reference forward at all
        assert full.reference.forwards > 0 and resumed.reference.forwards == 0
