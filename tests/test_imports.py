"""PyPI has unrelated distributions named ``callbacks`` and ``evals``: ours must win."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_callbacks_and_evals_resolve_inside_the_repo():
    import callbacks
    import evals

    for module in (callbacks, evals):
        assert Path(module.__file__).resolve().is_relative_to(REPO), module.__file__


def test_importing_the_package_stays_light():
    import subprocess
    import sys

    code = "import lit_align, evals, sys; print('lightning' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"]
