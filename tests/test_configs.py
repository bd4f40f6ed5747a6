"""Every YAML under configs/ parses through the real CLI (class paths resolved, types checked).

Full recipes are parsed as ``fit`` configs, evaluation suites (a top-level ``tasks``) as
``evaluate`` configs, and snippets (strategy / reference presets, no ``model``) on top of the demo's
DPO recipe, the way their opening comments say to use them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
BASE = REPO / "configs" / "demo" / "dpo.yaml"


def command_for(path: Path) -> list[str]:
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
