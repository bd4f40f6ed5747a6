"""configs/strategy presets on CPU: two gloo processes give the one-process loss trajectory and export.

Every run goes through ``cli.py fit`` with the real preset, 4 steps of DPO on a tiny Llama with a
frozen reference, global batch 8 pairs: one process with batch 8, or two with batch 4 each (the
explicit DistributedSampler gives rank r the permutation's entries r, r+2, ..., so the union of the
two rank batches is exactly the one-process batch; the test checks that too).

Tolerances, and why they are not zero: with two ranks each gradient is the mean of two half-batch
means (summed in another order than one full-batch mean), so it differs in the last float32 bits.
Losses agree to 1e-5 absolute. Adam divides each gradient by its running RMS, which turns a
last-bit difference on a near-zero gradient entry into a visible one on that weight, so exported
weights after 4 steps at lr 1e-3 (updates up to 4e-3) are compared at 1e-4 absolute.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers_distributed import STRATEGIES, exported_weights, fit

LOSS_ATOL = 1e-5
WEIGHT_ATOL = 1e-4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from benchmarks.demos.sort_task import write_task

    directory = tmp_path_factory.mktemp("distributed_data")
    write_task(directory, train=64, val=8, test=8)
    return directory


@pytest.fixture(scope="module")
def single(data_dir, tmp_path_factory) -> tuple[dict, dict]:
    run = tmp_path_factory.mktemp("single")
    return fit(run, data_dir, batch_size=8), exported_weights(run)


def check_same_run(single: tuple[dict, dict], result: dict, weights: dict) -> None:
    expected, expected_weights = single
    assert result["indices"] == expected["indices"]  # the same global batch at every step
    assert len(result["losses"]) == len(expected["losses"]) == 4
    assert result["losses"] == pytest.approx(expected["losses"], abs=LOSS_ATOL)
    # the logged gradient norm is the global one (all-reduced / full DTensor), not one rank's
    assert len(result["grad_norms"]) == 4 and result["grad_norms"] == pytest.approx(expected["grad_norms"], rel=1e-3)
    assert set(weights) == set(expected_weights)
    for name, value in weights.items():
        torch.testing.assert_close(value, expected_weights[name], rtol=0, atol=WEIGHT_ATOL, msg=name)


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_two_processes_match_one(single, data_dir, tmp_path):
    result = fit(tmp_path, data_dir, batch_size=4, strategy="ddp", devices=2)
    check_same_run(single, result, exported_weights(tmp_path))


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp2_two_processes_match_one_and_export_full_weights(single, data_dir, tmp_path):
    result = fit(tmp_path, data_dir, batch_size=4, strategy="fsdp2", devices=2)
    weights = exported_weights(tmp_path)
    # the export holds full tensors (not one rank's shards) and the tied head once, as a plain save does
    assert "lm_head.weight" not in weights
    check_same_run(single, result, weights)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_dir()  # a distributed (DCP) checkpoint


@pytest.mark.slow
@pytest.mark.distributed
def test_two_simulated_nodes_match_one(single, data_dir, tmp_path):
    # two separate launches, NODE_RANK 0 and 1, MASTER_ADDR 127.0.0.1, num_nodes 2 x devices 1
    result = fit(tmp_path, data_dir, batch_size=4, strategy="ddp", nodes=2)
    check_same_run(single, result, exported_weights(tmp_path))


@pytest.mark.parametrize("preset", sorted(p.stem for p in STRATEGIES.glob("*.yaml")))
def test_preset_parses_with_a_recipe(preset, capsys):
    from cli import main

    demo = STRATEGIES.parent / "demo" / "dpo.yaml"
    text = (STRATEGIES / f"{preset}.yaml").read_text()
    assert text.startswith("# python cli.py fit --config configs/demo/dpo.yaml")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(demo), "--config", str(STRATEGIES / f"{preset}.yaml"), "--print_config"])
    assert exit_.value.code in (0, None)
    assert "trainer:" in capsys.readouterr().out


def test_fsdp1_policy_wraps_decoder_layers(tiny_source):
    from lit_align.sharding import DecoderLayerPolicy

    model = tiny_source.load_model()
    targets = DecoderLayerPolicy()._run_policy(model, set(), {})
    assert [type(m).__name__ for m in targets] == ["LlamaDecoderLayer"] * len(model.model.layers)
