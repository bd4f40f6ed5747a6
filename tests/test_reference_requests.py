"""What a loss asks of the reference's log-prob pass reaches the strategy: LD-DPO with ``reference_too``."""

from __future__ import annotations

import math

import pytest
import torch

from lit_align import losses as L
from tests.conftest import quiet_trainer


def desensitized_by_hand(token_logps: torch.Tensor, mask: torch.Tensor, half: int, alpha: float) -> torch.Tensor:
    """Row by row in Python: the k-th completion token weighs 1 while k <= min(|yw|, |yl|), else alpha."""
    counts = mask.sum(-1).tolist()
    sums = []
    for row in range(mask.shape[0]):
        public = min(counts[row % half], counts[row % half + half])
        k, total = 0, 0.0
        for t in range(mask.shape[1]):
            if mask[row, t]:
                k += 1
                total += float(token_logps[row, t]) * (1.0 if k <= public else alpha)
        sums.append(total)
    return torch.tensor(sums, dtype=torch.float64)


def test_step0_reference_too_gives_ln2_and_reference_false_does_not(tiny_source, sort_task):
    """At step 0 policy = frozen copy. Reweighting both sides cancels exactly (D = 0, loss ln 2);
    reweighting only the policy leaves D = (alpha - 1) * (policy tail logps difference), not 0."""
    from lit_align.data import PreferenceDataModule
    from lit_align.module import PreferenceModule

    data = PreferenceDataModule(train_path=str(sort_task["train"]), val_path=str(sort_task["val"]), batch_size=8)
    both = PreferenceModule(model=tiny_source, loss=L.LengthDesensitized(L.DPO(0.1), alpha=0.5, reference_too=True))
    (metrics,) = quiet_trainer().validate(both, data)
    assert metrics["val/loss"] == pytest.approx(math.log(2), abs=1e-7)
    assert metrics["val/rewards/margins"] == 0.0
    policy_only = PreferenceModule(model=tiny_source, loss=L.LengthDesensitized(L.DPO(0.1), alpha=0.5))
    (metrics,) = quiet_trainer().validate(policy_only, data)
    assert abs(metrics["val/loss"] - math.log(2)) > 1e-3


def test_reference_too_after_training_matches_a_hand_computation(tiny_source, sort_task):
    """After 3 steps (policy != reference), the module's loss equals DPO on sums recomputed by hand
    from each model's per-token log-probs."""
    from lit_align.batch import LogpsRequest
    from lit_align.data import PreferenceDataModule
    from lit_align.logprobs import sequence_logps
    from lit_align.module import PreferenceModule

    alpha, beta = 0.3, 0.1
    module = PreferenceModule(model=tiny_source, loss=L.LengthDesensitized(L.DPO(beta), alpha=alpha, reference_too=True), lr=1e-2)
    data = PreferenceDataModule(train_path=str(sort_task["train"]), batch_size=4)
    quiet_trainer(max_steps=3).fit(module, data)
    batch = next(iter(data.train_dataloader()))
    module.eval()
    with torch.no_grad():
        _, _, out = module.forward_step(batch)
        request = LogpsRequest(token_logps=True)
        pol = sequence_logps(module.policy, batch, request, None)
        ref = sequence_logps(module.reference.model, batch, request, None)
    half = batch.num_pairs
    p = desensitized_by_hand(pol.token_logps, pol.token_mask, half, alpha)
    q = desensitized_by_hand(ref.token_logps, ref.token_mask, half, alpha)
    margin = (p[:half] - q[:half]) - (p[half:] - q[half:])
    expected = -torch.nn.functional.logsigmoid(beta * margin)
    assert not torch.allclose(p, q)  # the policy has moved: the check is not the step-0 identity
    torch.testing.assert_close(out.losses.double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", ["CachedReference", "DatasetColumnReference", "MultiReference", "NoReference"])
def test_reference_too_is_refused_by_sum_only_strategies(tiny_source, strategy):
    from lit_align import reference as R
    from lit_align.module import PreferenceModule

    loss = L.LengthDesensitized(L.DPO(0.1), reference_too=True)
    with pytest.raises(ValueError, match="per-token|needs reference log-probs"):
        PreferenceModule(model=tiny_source, loss=loss, reference=getattr(R, strategy)())
    PreferenceModule(model=tiny_source, loss=L.LengthDesensitized(L.DPO(0.1)), reference=R.CachedReference())


def test_wrappers_pass_every_requirement_through(tiny_source):
    """A wrapper is checked as its inner loss: LD-DPO around the likelihood objective still needs an
    unconditional reference, and a WeightedLoss merges the reference requests of its terms."""
    from lit_align.module import PreferenceModule
    from lit_align.reference import FrozenReference

    with pytest.raises(ValueError, match="unconditional"):
        PreferenceModule(model=tiny_source, loss=L.WPOWeighted(L.LengthDesensitized(L.LikelihoodDPO())), reference=FrozenReference())
    composite = L.WeightedLoss([L.SFT(), L.LengthDesensitized(L.DPO(), reference_too=True)])
    assert composite.reference_logps_request.token_logps and not L.DPO().reference_logps_request.token_logps
    assert L.WPOWeighted(L.LengthDesensitized(L.DPO(), reference_too=True)).reference_logps_request.token_logps
