"""The YAML loader of config files: a key given twice is refused, and a YAML error names its file.

PyYAML keeps the last of two equal keys in a mapping without a word (``lr: 1e-5`` early in a file,
``lr: 1e-3`` further down: the second wins silently), and reports a syntax error as
``in "<unicode string>", line 3`` because jsonargparse hands it the file's text. ``install`` makes
this module's loader jsonargparse's YAML loader (``jsonargparse.set_loader``); jsonargparse passes it
the path of the config file being read, so both errors name the file, line and key. It keeps
jsonargparse's own loader rules (its float resolver: ``1e-5`` is a float; no timestamps).
A config file that is empty (or only comments) or not UTF-8 is refused naming the file (jsonargparse
said "Unexpected config:" and let a bare ``UnicodeDecodeError`` escape). Non-finite numbers (``.nan``, ``.inf``) load as floats and are refused by the classes that receive
them (``lit_align.finite``) or by the settings checks (``lit_align.settings``).
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from yaml.constructor import ConstructorError


class DuplicateKeyError(ConstructorError):
    """A mapping that gives one key twice."""


class EmptyConfigError(yaml.YAMLError):
    """A config file with no settings in it."""


def strict_loader() -> type:
    """jsonargparse's default YAML loader class, refusing duplicate keys (built once, on first use)."""
    global _STRICT
    if _STRICT is None:
        from jsonargparse._loaders_dumpers import get_yaml_default_loader

        class StrictLoader(get_yaml_default_loader()):
            def construct_mapping(self, node, deep=False):
                if isinstance(node, yaml.MappingNode):
                    seen: dict[Any, Any] = {}
                    for key_node, _ in node.value:
                        if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" merges may override on purpose
                            continue
                        key = self.construct_object(key_node, deep=True)
                        try:
                            first = seen.setdefault(key, key_node)
                        except TypeError:  # an unhashable key: PyYAML refuses it itself below
                            continue
                        if first is not key_node:
                            raise DuplicateKeyError(
                                None, None, f"key {key!r} is given twice in one mapping (first on line {first.start_mark.line + 1}; "
                                "YAML would keep the last silently): remove one", key_node.start_mark)
                return super().construct_mapping(node, deep=deep)

        _STRICT = StrictLoader
    return _STRICT


_STRICT: type | None = None


def load_yaml(value: str, path: str = "") -> Any:
    """jsonargparse's ``yaml_load`` with the strict loader; errors name ``path`` (a config file) when there is one."""
    try:
        loaded = yaml.load(value, Loader=strict_loader())
    except yaml.YAMLError as err:
        if path:
            err = _name_file(err, full_path(str(path)))
        raise err
    if loaded is None and path:  # jsonargparse: "Unexpected config:", no file named
        raise EmptyConfigError(f"config file {full_path(str(path))} is empty (no settings, only blanks or comments)")
    # what jsonargparse's yaml_load does after loading: "{a, b}" and "key:" given as a plain value stay strings
    if isinstance(loaded, dict) and loaded and all(v is None for v in loaded.values()):
        if len(loaded) == 1 and value.strip() == next(iter(loaded)) + ":":
            return value
        keys = set(value.strip(" {}").replace(" ", "").split(","))
        if keys and keys == set(loaded):
            return value
    return loaded


def full_path(name: str) -> str:
    """The config file's full path: jsonargparse passes the loader its base name, while it reads the file
    with the file's folder as its current path directory (a private context variable: the name alone if it moves)."""
    try:
        from jsonargparse._paths import _current_path_dir

        folder = _current_path_dir.get()
    except (ImportError, AttributeError, LookupError):
        return name
    return os.path.join(folder, name) if folder and not os.path.isabs(name) else name


def _name_file(err: yaml.YAMLError, path: str) -> yaml.YAMLError:
    """The same error with ``<unicode string>`` replaced by the file's path in its marks."""
    for attr in ("context_mark", "problem_mark"):
        mark = getattr(err, attr, None)
        if mark is not None and mark.name in ("<unicode string>", "<string>", "<file>"):
            # (the C loader's marks are read-only: a plain one with the path; no snippet, the line and column say where)
            setattr(err, attr, yaml.error.Mark(path, mark.index, mark.line, mark.column, None, None))
    return err


def read_utf8(path: str) -> str:
    """A local config file's text; bytes that are not UTF-8 refused naming the file, line and byte."""
    from lit_align.errors import ConfigError

    raw = open(path, "rb").read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"config file {path} is not UTF-8 text: byte {raw[err.start]:#04x} at line {line} "
                          f"(offset {err.start}); save it as UTF-8") from None


def install() -> None:
    """Make ``load_yaml`` jsonargparse's loader for YAML (the parser mode of LightningCLI), and its local
    file reads strict UTF-8 naming the file (it read with the locale's codec and let the error escape)."""
    from jsonargparse import set_loader
    from jsonargparse._paths import Path as ArgPath

    set_loader("yaml", load_yaml, (yaml.YAMLError,))
    original = ArgPath.read_text
    if getattr(original, "_lit_align", False):
        return

    def read_text(self) -> str:
        if self._std_io or self._is_url or self._is_fsspec:
            return original(self)
        return read_utf8(self._absolute)

    read_text._lit_align = True  # type: ignore[attr-defined]
    ArgPath.read_text = read_text
