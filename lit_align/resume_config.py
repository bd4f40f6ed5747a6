"""What a resume (or an evaluation of a checkpoint) checks: the configured settings against the checkpoint's.

A checkpoint records the settings it was trained with: the module's hyper-parameters (model source,
loss, reference strategy, optimiser and schedule) and, written by ``cli.py``, the data module's
config (``DATA_CONFIG_KEY``). LightningCLI would replace the configured module settings by the
checkpoint's without a word, so ``fit --config dpo.yaml --ckpt_path <an epsilon-DPO run>`` would
silently continue epsilon-DPO. ``cli.py`` compares the two first and refuses any difference in one line
naming every differing key; ``--use_checkpoint_config true`` takes the checkpoint's settings instead.

- fit compares every key of ``model`` and ``data`` except the execution knobs in ``IGNORED`` (they do
  not change what is trained: a resume may switch on activation checkpointing).
- fit also compares the Trainer settings that change each optimizer step (``TRAINED_BY``), recorded by
  ``cli.py`` under ``TRAINER_CONFIG_KEY``; a checkpoint written before that records none and is not compared.
- evaluate / validate / test / predict refuse another model source (``EVALUATED``: the checkpoint's
  weights would be read into another model), and only when the config names a model. The loss and
  the reference strategy define the held-out metrics, and scoring a checkpoint against another
  reference is a question this tool exists to ask: they may differ, and each difference is said in
  one line (``SCORED_WITH``) so it is never silent. The data may differ (held-out sets). With no model
  configured, the checkpoint's settings are taken, as before.
- Keys only one side has (a setting added to lit-align after the checkpoint was written) are not
  compared; a different ``class_path`` is one difference (its init args are not listed).
- Credentials are masked in checkpoints (``lit_align.redaction``), so the configured side is masked the same way.
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any

from lit_align.errors import ConfigError
from lit_align.redaction import redact

DATA_CONFIG_KEY = "lit_align_data_config"
"""Checkpoint entry holding the data module's config (class_path / init_args), written by ``cli.py``."""

IGNORED = frozenset({"model.activation_checkpointing", "model.compile", "model.logps_chunk_size", "data.num_workers",
                     "data.eval_batch_size"})
"""Settings that change how a run executes, not what it trains: not compared."""

EVALUATED = ("model.model.",)
"""What an evaluation refuses to change: the model (source and its settings)."""

SCORED_WITH = ("model.loss.", "model.reference.")
"""What an evaluation may change, saying so: the loss and the reference strategy its metrics use."""

TRAINER_CONFIG_KEY = "lit_align_trainer_config"
"""Checkpoint entry holding the Trainer settings that change the optimisation itself (``TRAINED_BY``)."""

TRAINED_BY = {"accumulate_grad_batches": 1, "gradient_clip_val": 0.0, "gradient_clip_algorithm": "norm"}
"""Trainer settings a resume compares, with what an unset (null) one means: they change what each optimizer
step does (the batch a step averages over, the clipping), as a different lr would. Execution settings
(devices, precision, strategy, max_steps) may change on a resume and are not compared."""

SWITCH = "use_checkpoint_config"


def trained_by(trainer_config: Any) -> dict[str, Any]:
    """The ``TRAINED_BY`` settings of a trainer config, an unset one as its meaning (so null and 1 are the same)."""
    config = plain(trainer_config) or {}
    out: dict[str, Any] = {}
    for key, default in TRAINED_BY.items():
        value = config.get(key)
        value = default if value is None else value
        out[key] = float(value) if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool) else value
    return out


def plain(value: Any) -> Any:
    """A config value as plain data: namespaces and mappings to dicts, tuples to lists, paths to strings."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if k not in ("_instantiator", "__path__")}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, type):  # a class-valued setting (the data module's collator), as its import path
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)  # an object (the Python API's model source): compared by its repr, at worst a false alarm


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Dotted keys of a config section; a ``class_path`` component gives ``<key>.class_path`` and its init args."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    if "class_path" in value:
        out[f"{prefix}.class_path"] = value["class_path"]
        value = {**(value.get("init_args") or {}), **(value.get("dict_kwargs") or {})}
    for key, item in value.items():
        out.update(flatten(item, f"{prefix}.{key}"))
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def differences(configured: dict[str, Any], recorded: dict[str, Any], only: tuple[str, ...] | None = None) -> list[str]:
    """``key (config X, checkpoint Y)`` for each setting both sides have and that differs.

    Args:
        configured: sections (``model``, ``data``) of the run's config.
        recorded: the same sections as the checkpoint recorded them.
        only: compare only keys under these prefixes (default: all but ``IGNORED``).
    """
    ours: dict[str, Any] = {}
    theirs: dict[str, Any] = {}
    for section in recorded:
        if section in configured and recorded[section] is not None:
            ours.update(flatten(plain(redact(plain(configured[section]))), section))
            theirs.update(flatten(plain(recorded[section]), section))
    common = sorted(set(ours) & set(theirs))
    # a component whose class differs is one difference: its init args are not listed
    replaced = tuple(k[: -len("class_path")] for k in common if k.endswith(".class_path") and not same(ours[k], theirs[k]))
    found: list[str] = []
    for key in common:
        if key in IGNORED or (only and not (key + ".").startswith(only)):
            continue
        if key.startswith(replaced) and not key.endswith(".class_path"):
            continue
        if not same(ours[key], theirs[key]):
            shown = key.removesuffix(".class_path")
            found.append(f"{shown} (config {ours[key]!r}, checkpoint {theirs[key]!r})")
    return found


def announce_differences(ckpt_path: str, found: list[str], subcommand: str) -> str | None:
    """The line that says an evaluation scores with another loss / reference than the checkpoint trained with."""
    if not found:
        return None
    return (f"[{subcommand}] scoring {ckpt_path} with the config's loss / reference, not the ones it was trained with: "
            f"{'; '.join(found)}")


def refuse_differences(ckpt_path: str, found: list[str], subcommand: str) -> None:
    """One ``ConfigError`` line listing every difference and the two ways on."""
    if not found:
        return
    what = "resume" if subcommand == "fit" else subcommand
    raise ConfigError(
        f"ckpt_path {ckpt_path} was trained with other settings than the config's, so the {what} would silently "
        f"run the checkpoint's: {'; '.join(found)}. Make the config match the checkpoint, or pass --{SWITCH} true "
        "to use the checkpoint's settings")
