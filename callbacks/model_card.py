"""The model card (``README.md``) of an export: base model, training, data, steps and final metrics.

Written in place of PEFT's empty template. Everything in it comes from the run: the resolved config
(``config.yaml``, secrets already removed, and redacted again here), the number of optimizer steps,
and the last logged value of each metric.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

from lit_align.redaction import redact


def read_config(path: Path) -> dict | None:
    """A run's ``config.yaml`` (None when the run was not started by ``cli.py``)."""
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def metrics_at(path: Path, step: int | None) -> dict[str, float]:
    """The last logged value of each metric in a CSVLogger's ``metrics.csv`` at or before ``step``."""
    if not path.is_file():
        return {}
    last: dict[str, float] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            row_step = row.get("step")
            if step is not None and row_step not in (None, "") and int(float(row_step)) > step:
                continue
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                last[key] = float(value)  # a NaN stays: the metric's last value, not an older finite one
    return last


def _data_rows(config: dict | None) -> list[tuple[str, Any]]:
    data = (config or {}).get("data") or {}
    args = data.get("init_args", data) if isinstance(data, dict) else {}
    keys = ("train_path", "val_path", "val_fraction", "format", "max_length", "max_prompt_length", "batch_size")
    return [(k, args[k]) for k in keys if args.get(k) is not None]


def load_snippet(reference: dict, adapter: bool, merged: bool) -> str:
    name = reference.get("name", "BASE")
    lines = ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", ""]
    if adapter:
        lines[1:1] = ["from peft import PeftModel"]
        if reference.get("format") == "gguf":
            lines += [f"# the base is the GGUF file {name} (sha256 {reference.get('sha256')}), dequantized:",
                      f'base = AutoModelForCausalLM.from_pretrained("DIR_OF_THE_FILE", gguf_file="{name}", '
                      f'dtype="{reference.get("dtype") or "float32"}")']
        else:
            lines += [f'base = AutoModelForCausalLM.from_pretrained("{name}")']
        lines += ['model = PeftModel.from_pretrained(base, "THIS_FOLDER")']
        if merged:
            lines += ['# or, without PEFT: AutoModelForCausalLM.from_pretrained("THIS_FOLDER/merged")']
    else:
        lines += ['model = AutoModelForCausalLM.from_pretrained("THIS_FOLDER")']
    lines += ['tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")', "```"]
    return "\n".join(lines)


def model_card(reference: dict | None, adapter: bool, merged: bool, steps: int | None, metrics: dict[str, float],
               config: dict | None, training: dict[str, str]) -> str:
    """README.md of an export.

    Args:
        reference: The base's ``export_reference()`` (name, format, sha256 / revision ...), or None.
        adapter: The folder holds a PEFT adapter (else a full model).
        merged: A merged full model is in ``merged/``.
        steps: Optimizer steps of the exported weights.
        metrics: Final value of each logged metric.
        config: The run's resolved config (``config.yaml``), or None.
        training: One-line descriptions (loss, reference strategy, policy) from the module itself.
    """
    reference = reference or {}
    front = {"library_name": "peft" if adapter else "transformers", "tags": ["lit-align", "preference-optimisation"]}
    if reference.get("format") == "hub":
        front["base_model"] = reference["name"]
    parts = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             "# " + ("LoRA adapter" if adapter else "Model") + " trained with lit-align", ""]
    parts += ["## Base model", ""]
    if reference:
        parts += [f"- {key}: `{value}`" for key, value in reference.items() if key != "init_args" and value is not None]
        if "init_args" in reference:
            parts += [f"- settings: `{json.dumps(reference['init_args'], sort_keys=True)}`"]
    else:
        parts += ["- not recorded"]
    if adapter:
        parts += ["", "This folder holds the adapter (`adapter_config.json`'s `base_model_name_or_path` is the base "
                  "named above)" + ("; `merged/` holds the full model with the adapter merged in." if merged else ".")]
    parts += ["", "## Training", ""]
    parts += [f"- {key}: {value}" for key, value in training.items()]
    parts += [f"- optimizer steps: {steps if steps is not None else 'not recorded'}"]
    data = _data_rows(config)
    parts += ["", "## Data", ""] + ([f"- {k}: `{v}`" for k, v in data] or ["- not recorded"])
    parts += ["", "## Final metrics", ""]
    if metrics:
        parts += ["| metric | value |", "|---|---:|"] + [f"| {k} | {v:.6g} |" for k, v in sorted(metrics.items())]
    else:
        parts += ["none logged"]
    parts += ["", "## Loading", "", load_snippet(reference, adapter, merged)]
    if config is not None:
        parts += ["", "## Config", "", "The run's resolved config (`cli.py fit --config` reruns it):", "", "```yaml",
                  yaml.safe_dump(redact(config), sort_keys=False).strip(), "```"]
    return "\n".join(parts) + "\n"
