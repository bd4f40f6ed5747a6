"""Every YAML under configs/ parses through the real CLI (class paths resolved, types checked).

A file whose opening comment states a ``cli.py`` command over files of the repository is parsed with
that command's ``--config`` layers (a recipe layered over ``configs/recipes/tiny_base.yaml``, a strategy
preset over the demo's DPO recipe). Otherwise full recipes are parsed as ``fit`` configs, evaluation
suites (a top-level ``tasks``) as ``evaluate`` configs, and snippets (no ``model``) on top of the
demo's DPO recipe.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers_configs import stated_command

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "configs" / "studies").glob("*.yaml"))  # not fit configs: read by benchmarks.studies.study
CONFIGS = sorted(set((REPO / "configs").rglob("*.yaml")) - set(STUDIES))
BASE = REPO / "configs" / "demo" / "dpo.yaml"


def command_for(path: Path) -> list[str]:
    stated = stated_command(path)
    if stated is not None:
        return stated
    content = yaml.safe_load(path.read_text()) or {}
    if "tasks" in content:
        return ["evaluate", "--config", str(path)]
    if "model" in content or "data" in content:
        return ["fit", "--config", str(path)]
    return ["fit", "--config", str(BASE), "--config", str(path)]


def test_there_are_configs():
    assert BASE in CONFIGS and len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_config_parses(path, capsys):
    import cli

    first = path.read_text().splitlines()[0]
    assert first.startswith("# python ") or first.startswith("# "), f"{path} should open with the command that runs it"
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command_for(path), "--print_config"])
    assert exit_.value.code in (0, None), capsys.readouterr().err[-2000:]
    printed = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(printed, dict)


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_arms_parse(path, tmp_path, capsys):
    """Every arm of every study, layered over its base config as the runner does, is a valid fit config."""
    import cli
    from benchmarks.studies.study import StudyConfig, substitute

    assert path.read_text().startswith("# python -m benchmarks.studies.study --config configs/studies/")
    study = StudyConfig.load(path)
    values = {"start": "start/hf"} | {f"start:{name}": f"{name}/hf" for name in study.starts}
    assert len(study.seeds) >= 3
    for arm in study.arms:
        layer = tmp_path / f"{arm.name}.yaml"
        layer.write_text(yaml.safe_dump(substitute(arm.config, values)))
        with pytest.raises(SystemExit) as exit_:
            cli.main(["fit", "--config", str(REPO / study.base), "--config", str(layer), *study.base_args,
                      *substitute(arm.args, values), "--print_config"])
        assert exit_.value.code in (0, None), f"{arm.name}: {capsys.readouterr().err[-2000:]}"
        printed = yaml.safe_load(capsys.readouterr().out)
        loss = arm.config.get("model", {}).get("loss")
        if loss:  # the arm's loss replaced the base's, with exactly its own arguments
            assert printed["model"]["loss"]["class_path"] == loss["class_path"]
            assert {k: printed["model"]["loss"]["init_args"][k] for k in loss.get("init_args", {})} == loss.get("init_args", {})
