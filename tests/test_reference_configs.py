"""Every YAML snippet in configs/reference parses and instantiates (class_path injection, no weights loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser

from lit_align.models import ModelSource
from lit_align.reference import ReferenceStrategy

SNIPPETS = sorted((Path(__file__).parent.parent / "configs" / "reference").glob("*.yaml"))


@pytest.mark.parametrize("path", SNIPPETS, ids=lambda p: p.stem)
def test_snippet_instantiates(path):
    config = yaml.safe_load(path.read_text())["model"]
    assert path.read_text().startswith("# python cli.py fit")
    parser = ArgumentParser()
    parser.add_argument("--reference", type=ReferenceStrategy)
    parser.add_argument("--model", type=ModelSource | None, default=None)
    parsed = parser.parse_object({"reference": config["reference"], "model": config.get("model")})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    objects = instantiate(parsed)
    assert isinstance(objects.reference, ReferenceStrategy)
    assert type(objects.reference).__name__ in config["reference"]["class_path"]
    for value in [getattr(objects.reference, "source", None), *getattr(objects.reference, "sources", [])]:
        assert value is None or isinstance(value, ModelSource)  # nested sources became objects, not dicts
    if config.get("model"):
        assert isinstance(objects.model, ModelSource)
