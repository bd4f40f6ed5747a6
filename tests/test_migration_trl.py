"""docs/migration-from-trl.md maps every TRL DPOConfig field, names only things that exist, and its recipe runs.

The page's tables are the one source of the mapping; these tests parse them.
"""

from __future__ import annotations

import dataclasses
import math
import importlib
import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "migration-from-trl.md"
RECIPE = REPO / "configs" / "recipes" / "smollm2_dpo_from_trl.yaml"

trl = pytest.importorskip("trl")


def section(title: str) -> str:
    text = PAGE.read_text()
    start = text.index(f"\n{title}\n")
    following = re.search(r"\n#{2,3} ", text[start + len(title) + 2:])
    return text[start: start + len(title) + 2 + following.start()] if following else text[start:]


def table(title: str) -> dict[str, list[str]]:
    """First-column name (backticks stripped) -> the row's cells, for the table under ``title``."""
    rows = {}
    for line in section(title).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


def own_fields() -> dict[str, dataclasses.Field]:
    import transformers

    inherited = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    return {f.name: f for f in dataclasses.fields(trl.DPOConfig) if f.name not in inherited}


def test_every_dpo_config_field_of_its_own_is_mapped():
    mapped = table("## DPOConfig's own fields")
    fields = own_fields()
    assert not sorted(set(fields) - set(mapped)), f"DPOConfig fields without a row in {PAGE.name}: {sorted(set(fields) - set(mapped))}"
    assert not sorted(set(mapped) - set(fields)), f"rows for fields DPOConfig does not have: {sorted(set(mapped) - set(fields))}"
    for name, cells in mapped.items():
        assert len(cells) == 4 and cells[2], f"{name}: no lit-align key or 'unsupported'"
        if cells[2] == "unsupported":
            assert len(cells[3]) > 20, f"{name}: unsupported without a reason"


def test_the_trl_defaults_on_the_page_are_trl_s():
    for name, cells in table("## DPOConfig's own fields").items():
        field = own_fields()[name]
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert cells[1] == str(default).replace("'", '"'), (name, cells[1], default)


def test_every_loss_type_value_is_mapped():
    values = set(re.findall(r"`'(\w+)'`", own_fields()["loss_type"].metadata["help"]))
    assert len(values) > 10
    mapped = table("### loss_type values")
    assert not sorted(values - set(mapped)), sorted(values - set(mapped))


def test_training_arguments_rows_name_real_fields_and_cover_the_defaults_that_differ():
    import transformers

    names = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    rows = table("## TrainingArguments fields, by group")
    assert not sorted(set(rows) - names), sorted(set(rows) - names)
    differing = {"learning_rate", "warmup_steps", "lr_scheduler_type", "max_grad_norm", "gradient_checkpointing", "logging_steps"}
    assert differing <= set(rows)


def test_every_class_and_key_named_on_the_page_exists():
    """lit_align.* class paths import; model.* / trainer.* / data.init_args.* / checkpoint.* keys are parameters."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from cli import EvaluatingTrainer
    from lit_align.data import PreferenceDataModule
    from lit_align.module import PreferenceModule

    text = PAGE.read_text()
    for path in set(re.findall(r"\blit_align(?:\.\w+)+", text)):
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path
    parameters = {
        "model": inspect.signature(PreferenceModule).parameters,
        "trainer": {**inspect.signature(L.Trainer).parameters, **inspect.signature(EvaluatingTrainer).parameters},
        "data.init_args": inspect.signature(PreferenceDataModule).parameters,
        "checkpoint": inspect.signature(ModelCheckpoint).parameters,
    }
    for group, params in parameters.items():
        for key in set(re.findall(rf"`{re.escape(group)}\.(\w+)", text)):
            assert key in params, f"{group}.{key} on {PAGE.name} is not a setting"


def test_the_page_states_the_recipe_s_command():
    command = RECIPE.read_text().splitlines()[0].lstrip("# ")
    assert command in PAGE.read_text()


@pytest.mark.slow
def test_the_ported_recipe_runs_two_steps(tmp_path, monkeypatch):
    """The recipe as shipped, with a tiny model and local data in place of the hub's (and 2 steps)."""
    import csv

    import yaml

    import cli
    from benchmarks.demos.sort_task import write_task

    data = write_task(tmp_path / "data", train=48, val=8, test=8)
    monkeypatch.chdir(tmp_path)
    run = cli.main([
        "fit", "--config", str(RECIPE),
        "--model.model", "lit_align.models.TinyModel", "--model.model.init_args.hidden_size", "32",
        "--model.model.init_args.num_layers", "1", "--model.model.init_args.num_heads", "2",
        "--data.init_args.train_path", str(data["train"]), "--data.init_args.val_path", str(data["val"]),
        "--data.init_args.max_length", "64", "--data.init_args.max_prompt_length", "48",
        "--trainer.max_steps=2", "--trainer.val_every_n_steps=1", "--trainer.log_every_n_steps=1",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
    ])
    assert run.trainer.global_step == 2 and run.trainer.accumulate_grad_batches == 4
    assert run.trainer.gradient_clip_val == 1.0 and run.model.activation_checkpointing
    out = tmp_path / "runs" / "trl-port"
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r.get("val/loss")] == [0, 1]  # after each optimizer step (each 4 batches)
    lrs = [float(r["train/lr"]) for r in rows if r.get("train/lr")]
    assert lrs == pytest.approx([5e-6, 5e-6 * 0.5 * (1 + math.cos(math.pi * 1 / 2))])  # warmup round(0.2)=0, cosine over 2
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["optimizer"]["init_args"]["eps"] == 1e-8 and saved["seed_everything"] == 42
