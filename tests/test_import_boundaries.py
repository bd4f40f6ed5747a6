"""The layers import downwards only, checked on the source (``ast``), imports inside functions included.

- ``lit_align/`` (the library core) imports none of ``cli``, ``callbacks``, ``evals``, ``benchmarks``:
  it is usable (and importable) without the command line, the evaluation suite or the demos.
- ``evals/`` imports no Lightning and nothing of ``lit_align`` but ``lit_align.redaction``: it
  evaluates any model without training code (tests/test_imports.py checks the cheap import at run time).

A lazy import inside a function still counts: it is a dependency all the same, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE_FORBIDDEN = ("cli", "callbacks", "evals", "benchmarks")
EVALS_FORBIDDEN = ("lightning", "pytorch_lightning", "lit_align", "cli", "callbacks", "benchmarks")
EVALS_ALLOWED = ("lit_align.redaction",)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; ``from a import b`` gives ``a.b`` too,
    so ``from lit_align import redaction`` is told apart from ``from lit_align import module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:  # relative: inside the package
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def offending(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return [f"{path.relative_to(REPO)}:{line}: imports {name}"
            for path in sorted((REPO / package).rglob("*.py"))
            for line, name in imported_modules(path)
            if within(name, forbidden) and not within(name, allowed)]


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from cli import main\n    import evals.base\n")
    assert imported_modules(source) == [(1, "os"), (4, "cli.main"), (5, "evals.base")]


@pytest.mark.parametrize("package", ["lit_align", "evals"])
def test_the_packages_have_sources(package):
    assert len(list((REPO / package).rglob("*.py"))) > 5  # a wrong path would make the checks below vacuous


def test_library_core_imports_no_cli_callbacks_evals_or_benchmarks():
    found = offending("lit_align", CORE_FORBIDDEN)
    assert not found, "lit_align/ is the library core; move the code that needs these out of it:\n" + "\n".join(found)


def test_evals_imports_no_lightning_and_only_redaction_of_lit_align():
    found = offending("evals", EVALS_FORBIDDEN, EVALS_ALLOWED)
    assert not found, "evals/ must stay usable without Lightning or the training code:\n" + "\n".join(found)
