"""Non-finite numbers and ill-formed YAML never reach a run.

- Every float (or int) parameter of every loss, divergence, reference strategy, model source and the
  data module, found from the signatures, is given NaN, inf and -inf: each is refused with one line
  naming the class and the parameter (``lit_align.finite``: one mechanism, inherited by new classes).
- Through the command line, a YAML ``.nan`` (MRPO's ``eta: .nan`` passed the ``< 0`` check and failed
  at the first forward) and ``.inf`` are one line; so is a ``nan`` typed on the command line.
- A config file with a key given twice is refused naming the file, line and key; a YAML syntax error
  names the file, not ``<unicode string>``.
"""

from __future__ import annotations

import inspect
import math
import types
import typing

import pytest

import cli  # (before capsys: Lightning binds its log handler to the stderr of import time)
import lit_align.losses as losses
import lit_align.reference as reference
from lit_align.data import PreferenceDataModule
from lit_align.errors import ConfigError
from lit_align.finite import FiniteSettings
from lit_align.models import PretrainedModel, SmolLM2, TinyModel
from lit_align.peft_config import LoraSource
from tests.test_cli_errors import assert_one_line, case_dir, run_cli  # noqa: F401 (case_dir is a fixture)


def tiny() -> TinyModel:
    return TinyModel(hidden_size=32, num_layers=1, num_heads=2)


REQUIRED = {  # what a class needs besides the swept parameter (its other required arguments)
    "WeightedLoss": lambda: {"losses": [losses.DPO(), losses.SFT()], "weights": [1.0, 0.5]},
    "LengthDesensitized": lambda: {"loss": losses.DPO()},
    "WPOWeighted": lambda: {"loss": losses.DPO()},
    "PretrainedModel": lambda: {"path": "org/name"},
    "LoraSource": lambda: {"base": tiny()},
    "PreferenceDataModule": lambda: {"train_path": "train.jsonl"},
    "CachedReference": lambda: {},
}
ABSTRACT = {"PreferenceLoss", "PairwiseLoss", "Divergence", "ReferenceStrategy", "ModelSource", "LossWrapper", "Float64State"}


def classes() -> list[type]:
    found = {getattr(module, name) for module in (losses, reference) for name in module.__all__}
    found |= {PreferenceDataModule, TinyModel, PretrainedModel, SmolLM2, LoraSource}
    return sorted((c for c in found if inspect.isclass(c) and c.__name__ not in ABSTRACT), key=lambda c: c.__name__)


def number_parameters(cls: type) -> dict[str, bool]:
    """Parameters whose type admits an int or a float, directly or as list elements -> whether it is a list."""
    hints = typing.get_type_hints(inspect.unwrap(cls.__init__))
    found = {}
    for name in list(inspect.signature(cls.__init__).parameters)[1:]:
        hint = hints.get(name)
        members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        for member in members:
            if member in (int, float):
                found[name] = False
            elif typing.get_origin(member) in (list, tuple) and set(typing.get_args(member)) & {int, float}:
                found.setdefault(name, True)
    return found


SWEEP = [(cls, name, is_list) for cls in classes() for name, is_list in number_parameters(cls).items()]


def test_the_module_refuses_them_too():
    """PreferenceModule (a LightningModule: its checks are check_number's, which refuse non-finite values)."""
    from lit_align.module import PreferenceModule

    for name, is_list in number_parameters(PreferenceModule).items():
        for bad in (math.nan, math.inf, -math.inf):
            value = (0.9, bad) if is_list else bad
            with pytest.raises(ConfigError, match=name):
                PreferenceModule(**{name: value})


def test_the_sweep_covers_every_family():
    covered = {cls.__name__ for cls, _, _ in SWEEP}
    assert {"DPO", "MRPOReference", "MovingReference", "MultiReference", "PreferenceDataModule", "TinyModel", "LoraSource",
            "WeightedLoss", "AlphaDivergence", "EpsilonDPO"} <= covered
    assert len(SWEEP) > 60  # every float parameter of every class, not a sample
    assert all(issubclass(cls, FiniteSettings) for cls in classes())  # new classes inherit the check


@pytest.mark.parametrize("cls,name,is_list", SWEEP, ids=[f"{c.__name__}.{n}" for c, n, _ in SWEEP])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_every_number_parameter_refuses_non_finite_values(cls, name, is_list, bad):
    kwargs = REQUIRED.get(cls.__name__, dict)()
    kwargs[name] = [1.0, bad] if is_list else bad
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    message = str(err.value)
    assert name in message and "finite" in message and repr(bad) in message and "\n" not in message, message


# YAML values through the command line: each one line naming the class and key
YAML_CASES = {
    "MRPO eta .nan": ("model:\n  reference:\n    class_path: lit_align.reference.MRPOReference\n    init_args: {eta: .nan}\n",
                      ["MRPOReference", "eta", "finite", "nan"]),
    "DPO beta .inf": ("model:\n  loss:\n    class_path: lit_align.losses.DPO\n    init_args: {beta: .inf}\n", ["DPO", "beta", "inf"]),
    "weights list -.inf": ("model:\n  loss:\n    class_path: lit_align.losses.WeightedLoss\n    init_args:\n"
                           "      losses: [{class_path: lit_align.losses.DPO}, {class_path: lit_align.losses.SFT}]\n"
                           "      weights: [1.0, -.inf]\n", ["WeightedLoss", "weights[1]", "-inf"]),
    "data val_fraction .nan": ("data:\n  init_args: {val_path: null, val_fraction: .nan}\n", ["PreferenceDataModule", "val_fraction", "nan"]),
    "tiny rope_theta .nan": ("model:\n  model:\n    init_args: {rope_theta: .nan}\n", ["TinyModel", "rope_theta", "nan"]),
    "lr .nan": ("model:\n  lr: .nan\n", ["lr", "nan"]),
    "gradient_clip_val .inf": ("trainer:\n  gradient_clip_val: .inf\n", ["trainer.gradient_clip_val", "inf"]),
    "val_check_interval .nan": ("trainer:\n  val_check_interval: .nan\n", ["trainer.val_check_interval", "nan"]),
}


@pytest.mark.parametrize("name", list(YAML_CASES))
def test_a_non_finite_yaml_value_is_one_line(name, case_dir, tmp_path, capsys):  # noqa: F811
    text, expected = YAML_CASES[name]
    extra = tmp_path / "extra.yaml"
    extra.write_text(text)
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--config", extra], capsys)
    assert_one_line(rc, lines, *expected)


@pytest.mark.parametrize("args", [["--model.loss.init_args.beta", "nan"], ["--model.loss.init_args.beta", ".nan"],
                                  ["--model.reference", "lit_align.reference.MRPOReference", "--model.reference.init_args.eta", ".inf"],
                                  ["--trainer.gradient_clip_val", "nan"]], ids=["nan", ".nan", "eta .inf", "clip nan"])
def test_nan_on_the_command_line_is_one_line(args, case_dir, capsys):  # noqa: F811
    rc, lines = run_cli(["fit", "--config", case_dir["config"], *args], capsys)
    assert rc in (1, 2) and len(lines) == 1 and lines[0].startswith("error: ") and args[-2].rsplit(".", 1)[-1] in lines[0], lines


@pytest.mark.parametrize("where", ["top level", "nested", "inside a list item", "flow mapping"])
def test_a_key_given_twice_is_refused_naming_file_line_and_key(where, case_dir, tmp_path, capsys):  # noqa: F811
    text = {"top level": "seed_everything: 1\nseed_everything: 2\n",
            "nested": "model:\n  lr: 1.0e-3\n  weight_decay: 0.0\n  lr: 1.0e-5\n",
            "inside a list item": "trainer:\n  callbacks:\n    - class_path: lit_align.trainer.AlignTrainer\n      class_path: x\n",
            "flow mapping": "model:\n  loss: {class_path: lit_align.losses.DPO, init_args: {beta: 0.1, beta: 0.5}}\n"}[where]
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--config", path], capsys)
    key = {"top level": "seed_everything", "nested": "lr", "inside a list item": "class_path", "flow mapping": "beta"}[where]
    line = assert_one_line(rc, lines, f"key '{key}' is given twice", str(path), status=2)
    assert f"line {text.count(chr(10), 0, text.rindex(key + ':')) + 1}" in line  # the second occurrence's line


def test_a_merge_key_may_override():
    from lit_align.config_yaml import load_yaml

    assert load_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n") == {"base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2}}
    assert load_yaml("lr: 1e-5") == {"lr": 1e-5}  # jsonargparse's float rule kept (PyYAML alone reads a string)


def test_a_yaml_syntax_error_names_the_file(case_dir, tmp_path, capsys):  # noqa: F811
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  lr: [0.1\n")
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--config", path], capsys)
    line = assert_one_line(rc, lines, f'"{path}", line 2', status=2)
    assert "<unicode string>" not in line


@pytest.mark.parametrize("text", [b"", b"\n\n", b"# nothing set yet\n", b"---\n"], ids=["empty", "blank lines", "comment", "document marker"])
def test_an_empty_config_file_is_refused_naming_it(text, case_dir, tmp_path, capsys):  # noqa: F811
    path = tmp_path / "empty.yaml"
    path.write_bytes(text)
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--config", path], capsys)
    assert_one_line(rc, lines, f"config file {path} is empty", status=2)


@pytest.mark.parametrize("text", [b"\xff\xfem\x00o\x00d\x00e\x00l\x00:\x00\n", b"model:\n  lr: 1.0e-3\n# caf\xe9 latin-1\n",
                                  b"model:\n  lr: \x80\n"], ids=["utf-16", "latin-1 comment", "stray byte"])
def test_a_config_file_that_is_not_utf8_is_refused_naming_it(text, case_dir, tmp_path, capsys):  # noqa: F811
    path = tmp_path / "encoded.yaml"
    path.write_bytes(text)
    rc, lines = run_cli(["fit", "--config", case_dir["config"], "--config", path], capsys)
    bad = next(i for i in range(len(text)) if text[i] >= 0x80)
    line = text.count(b"\n", 0, bad) + 1
    assert_one_line(rc, lines, f"config file {path} is not UTF-8", f"line {line}")
