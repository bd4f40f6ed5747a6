"""The beta sweep command: table / plot from runs, and one real two-beta sweep sharing a cached reference."""

from __future__ import annotations

import csv

import pytest
import yaml

from benchmarks.studies import sweep
from tests.conftest import REPO


def fake_run(out, beta, margins, loss):
    run = out / sweep.run_name(beta)
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss,val/rewards/margins\n"
        f"0,4,0.7,,\n0,9,,{loss + 0.1},{margins / 2}\n0,19,,{loss},{margins}\n0,19,0.5,,\n"
    )


def test_summarise_takes_the_last_validation_values(tmp_path):
    """Rows are sorted by decreasing beta; each holds the LAST non-empty val/ value of its run."""
    fake_run(tmp_path, 0.1, margins=0.8, loss=0.5)
    fake_run(tmp_path, 0.02, margins=0.3, loss=0.6)
    rows = sweep.summarise(tmp_path, [0.02, 0.1])
    assert [r["beta"] for r in rows] == [0.1, 0.02]
    assert rows[0]["val/rewards/margins"] == 0.8 and rows[1]["val/loss"] == 0.6 and rows[0]["step"] == 19
    table = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert table[1]["beta"] == "0.02" and float(table[1]["val/rewards/margins"]) == 0.3
    assert "| 0.1 | 19 | 0.5 | 0.8 |" in (tmp_path / "sweep.md").read_text()
    assert (tmp_path / "sweep.png").stat().st_size > 5_000


def test_override_layers_beta_and_logger(tmp_path):
    layer = sweep.override(0.02, tmp_path)
    assert layer["model"]["loss"]["init_args"] == {"beta": 0.02}
    assert layer["trainer"]["logger"]["init_args"]["name"] == "beta_0.02"


@pytest.mark.parametrize("bad", ["0", "-0.1", "nan"])
def test_invalid_beta_stops_at_startup(tmp_path, capsys, bad):
    """A real recipe, a valid first beta and an invalid second one: refused before any fit starts
    (no run folder), with the value named (exit status 2, argparse's usage error)."""
    config = REPO / "configs" / "recipes" / "tiny_beta_sweep.yaml"
    assert config.is_file()
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--config", str(config), "--betas", "0.1", bad, "--out", str(tmp_path / "sweep")])
    assert stop.value.code == 2
    assert f"every beta must be > 0, got {float(bad):g}" in capsys.readouterr().err
    assert not (tmp_path / "sweep" / "beta_0.1").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_beta_sweep_end_to_end(tmp_path):
    """Two real fits of a tiny recipe (2 steps each): the second loads the first's cached reference."""
    from benchmarks.demos.sort_task import write_task

    write_task(tmp_path / "data", train=32, val=8, test=1)
    recipe = {
        "model": {
            "model": {"class_path": "lit_align.models.TinyModel", "init_args": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}},
            "loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.1}},
            "reference": {"class_path": "lit_align.reference.CachedReference", "init_args": {"cache_dir": str(tmp_path / "cache")}},
            "lr": 1e-3,
        },
        "data": {
            "class_path": "lit_align.data.PreferenceDataModule",
            "init_args": {"train_path": str(tmp_path / "data/train.jsonl"), "val_path": str(tmp_path / "data/val.jsonl"),
                          "batch_size": 8, "max_length": 40, "max_prompt_length": 24},
        },
        "trainer": {"max_steps": 2, "val_check_interval": 2, "log_every_n_steps": 1, "enable_progress_bar": False},
    }
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    rows = sweep.main(["--config", str(config), "--betas", "0.5", "0.05", "--out", str(tmp_path / "sweep")])
    assert [r["beta"] for r in rows] == [0.5, 0.05]
    assert all("val/rewards/margins" in r and "val/loss" in r for r in rows)
    loaded = {}
    for beta in (0.5, 0.05):
        saved = yaml.safe_load(open(tmp_path / "sweep" / f"beta_{beta:g}" / "config.yaml"))
        assert saved["model"]["loss"]["class_path"] == "lit_align.losses.DPO"
        assert saved["model"]["loss"]["init_args"]["beta"] == beta
        values = [row["train/ref/cache_loaded"] for row in csv.DictReader(open(tmp_path / "sweep" / f"beta_{beta:g}" / "metrics.csv"))]
        loaded[beta] = [float(v) for v in values if v]
    assert loaded[0.5] and set(loaded[0.5]) == {0.0}  # computed by the first run
    assert loaded[0.05] and set(loaded[0.05]) == {1.0}  # reused by the second
    assert (tmp_path / "sweep" / "sweep.png").is_file()
