"""The documentation site (docs/*.md, docs/mkdocs/mkdocs.yml) builds with ``mkdocs build --strict``: a broken
link, a missing page, a page left out of the nav or an API reference entry that does not resolve fails CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

CONFIG = Path("docs") / "mkdocs" / "mkdocs.yml"


def build(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / CONFIG), "-d", str(site)],
                          cwd=root, capture_output=True, text=True, env=env, timeout=300)


def test_docs_build_strict(tmp_path):
    result = build(REPO, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "cDPO" in api and "use_dora" in api  # the reference is generated from the docstrings
    pages = {p.stem for p in (REPO / "docs").glob("*.md")}
    assert {"getting-started", "data-formats", "recipes", "references-and-losses", "evaluation", "distributed",
            "resume-and-checkpoints", "migration-from-trl", "training", "troubleshooting", "export", "peft", "api"} <= pages


def test_a_broken_link_fails_the_build(tmp_path):
    """The same site with one dangling link does not build (so the test above can fail)."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    for package in ("lit_align", "callbacks", "evals"):  # what the API reference imports
        (root / package).symlink_to(REPO / package)
    index = root / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [a page that does not exist](no-such-page.md).\n")
    result = build(root, tmp_path / "site")
    assert result.returncode != 0 and "no-such-page.md" in result.stderr
