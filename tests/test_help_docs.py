"""``--help`` documents every option: each parameter of each injectable class has a description.

jsonargparse reads parameter descriptions from ``Args:`` sections (of the class, its ``__init__``
or a base class) through docstring-parser; attribute docstrings are not read. The check builds
the same parser arguments the CLI builds (``add_class_arguments`` / ``add_method_arguments``) and
reads each argument's help, so it tests what ``--help`` prints.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from jsonargparse import ArgumentParser

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lit_align", "callbacks", "evals")


def injectable_bases() -> tuple[type, ...]:
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from evals.base import EvalTask
    from evals.judge.client import JudgeClient
    from lit_align.data.collate import PairCollator
    from lit_align.losses.base import Divergence, PreferenceLoss
    from lit_align.models import ModelSource
    from lit_align.reference.base import ReferenceStrategy

    return (
        PreferenceLoss, Divergence, ReferenceStrategy, ModelSource, EvalTask, JudgeClient, PairCollator,
        L.LightningModule, L.LightningDataModule, L.Callback, L.pytorch.strategies.Strategy, ModuleWrapPolicy,
    )


def injectable_classes() -> list[type]:
    """Public classes defined in the project's packages that the CLI can inject (by class_path or signature)."""
    bases = injectable_bases()
    found: dict[str, type] = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names = [package_name] + [m.name for m in pkgutil.walk_packages(package.__path__, package_name + ".")]
        for name in names:
            module = importlib.import_module(name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == name and not cls.__name__.startswith("_") and issubclass(cls, bases):
                    found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[k] for k in sorted(found)]


CLASSES = injectable_classes()


def own_parameters(function) -> list[str]:
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in inspect.signature(function).parameters.values() if p.name != "self" and p.kind not in skip]


def help_by_parameter(parser: ArgumentParser, prefix: str) -> dict[str, str | None]:
    return {a.dest[len(prefix) + 1:]: a.help for a in parser._actions if a.dest.startswith(prefix + ".")}


def undocumented(helps: dict[str, str | None], names: list[str]) -> list[str]:
    return [n for n in names if not (helps.get(n) or "").strip()]


def test_discovery_finds_the_injectable_classes():
    names = {c.__name__ for c in CLASSES}
    expected = {
        "PreferenceModule", "DPO", "WeightedLoss", "LengthDesensitized", "AlphaDivergence", "MovingReference",
        "CachedReference", "PretrainedModel", "LoraSource", "PreferenceDataModule", "PairCollator", "HFExport",
        "PostFitEvaluation", "MTBench", "AlpacaEval", "VerifierTask", "LmEvalTasks", "JudgeClient",
        "FSDP2Strategy", "DecoderLayerPolicy",
    }
    assert expected <= names, expected - names


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_every_parameter_has_a_description(cls):
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "x", fail_untyped=False)
    names = own_parameters(cls.__init__)
    helps = help_by_parameter(parser, "x")
    missing_in_parser = [n for n in names if n not in helps]
    assert not missing_in_parser, f"{cls.__name__}: not CLI options: {missing_in_parser}"
    assert not undocumented(helps, names), f"{cls.__name__}: no description in --help for {undocumented(helps, names)}"


def test_evaluate_subcommand_parameters_are_documented():
    from cli import EvaluatingTrainer

    parser = ArgumentParser()
    parser.add_method_arguments(EvaluatingTrainer, "evaluate", "x", fail_untyped=False)
    names = own_parameters(EvaluatingTrainer.evaluate)
    assert not undocumented(help_by_parameter(parser, "x"), names)


def one_line(text: str) -> str:
    return " ".join(text.split())  # help text is wrapped: compare on single spaces


def help_in_process(args: list[str], capsys) -> str:
    import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code in (0, None), capsys.readouterr().err[-2000:]
    return one_line(capsys.readouterr().out)


def test_fit_help_shows_module_and_loss_descriptions(capsys):
    fit = help_in_process(["fit", "--help"], capsys)
    assert "Peak learning rate of the optimizer" in fit  # --model.lr
    assert "Where the policy comes from" in fit  # --model.model
    dpo = help_in_process(["fit", "--model.loss.help", "lit_align.losses.DPO"], capsys)
    assert "--model.loss.beta" in dpo and "Strength of the KL tie to the reference" in dpo
    assert "cDPO's assumed label-flip probability" in dpo  # label_smoothing


@pytest.mark.slow
def test_cli_subclass_help_prints_the_descriptions():
    """The real command line, in its own process: ``--model.reference.help`` shows alpha's and tau's meaning."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "cli.py", "fit", "--model.reference.help", "lit_align.reference.MovingReference"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = one_line(done.stdout)
    assert "--model.reference.alpha" in out and "Weight of the policy in each update" in out
    assert "--model.reference.tau" in out and "Optimizer steps between updates" in out
