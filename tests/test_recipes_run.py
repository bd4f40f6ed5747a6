"""Every recipe under configs/recipes/ runs: two optimizer steps on a miniature ``runs/demo`` tree.

The recipes point at the demo's artifacts (runs/demo/data, runs/demo/sft/hf, runs/demo/dpo/hf); the
test builds small stand-ins of those in a temporary working directory and runs each recipe through
the real CLI there, with only the step count and validation size overridden.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers_configs import layered, stated_command

REPO = Path(__file__).resolve().parents[1]
# smollm2_* recipes train the real SmolLM2 model on their own data: tests/test_real_model.py runs them
RECIPES = sorted(p for p in (REPO / "configs" / "recipes").glob("*.yaml") if not p.name.startswith("smollm2_"))


@pytest.fixture(scope="module")
def demo_tree(tmp_path_factory) -> Path:
    from lit_align.models import save_tiny
    from benchmarks.demos.sort_task import write_task

    root = tmp_path_factory.mktemp("workdir")
    write_task(root / "runs" / "demo" / "data", train=32, val=8, test=8)
    for stage, seed in (("sft", 0), ("dpo", 1)):
        save_tiny(root / "runs" / "demo" / stage / "hf", hidden_size=32, num_layers=1, num_heads=2, seed=seed)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs(recipe, demo_tree, monkeypatch):
    import cli

    monkeypatch.chdir(demo_tree)
    command = stated_command(recipe) or ["fit", "--config", str(recipe)]  # a tiny_* recipe is a layer over tiny_base.yaml
    cli.main([
        *command, "--trainer.max_steps=2", "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--data.init_args.batch_size=4",
    ])
    logger = layered(command)["trainer"]["logger"]["init_args"]
    run = demo_tree / logger["save_dir"] / logger["name"] / str(logger.get("version", ""))
    assert (run / "config.yaml").is_file() and (run / "hf" / "config.json").is_file(), run
    assert "val/loss" in (run / "metrics.csv").read_text().splitlines()[0]
    assert_trained(run, demo_tree / "runs" / "demo" / "sft" / "hf")


def assert_trained(run: Path, start: Path) -> None:
    """The exported policy moved away from the recipes' starting model (runs/demo/sft/hf), its weights
    are finite, and the last logged validation loss and reward margin are finite numbers."""
    import csv
    import math

    import torch
    from safetensors.torch import load_file

    trained, initial = load_file(run / "hf" / "model.safetensors"), load_file(start / "model.safetensors")
    assert set(trained) == set(initial)
    assert all(torch.isfinite(v).all() for v in trained.values())
    assert any(not torch.equal(trained[k], initial[k]) for k in initial), "the policy did not move"
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("val/loss")]
    assert rows, "no validation row"
    for key in ("val/loss", "val/rewards/margins"):
        assert math.isfinite(float(rows[-1][key])), key
