"""``fit --help`` leads with lit-align's own sections (model, data, export, checkpoint) before Lightning's trainer."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("subcommand", ["fit", "export"])
def test_help_sections_lead_with_model_and_data(subcommand):
    out = subprocess.run([sys.executable, "cli.py", subcommand, "--help"], cwd=REPO, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr[-2000:]
    sections = [line.split(":")[0] for line in out.stdout.splitlines() if re.match(r"^[A-Za-z_]+: .*:$|^options:$", line)]
    assert sections[:6] == ["options", "model", "data", "hf_export", "checkpoint", "trainer"], sections
