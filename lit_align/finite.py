"""No NaN or infinity reaches a component's constructor: one check for every class that takes settings.

A YAML ``.nan`` / ``.inf`` (or ``nan`` on the command line) passes every ``x < 0`` test a constructor
makes (comparisons with NaN are false) and fails at the first forward, or never. Instead of asking
each of the dozens of checks to remember ``math.isfinite``, the base classes of losses, divergences,
reference strategies, model sources and the data module inherit ``FiniteSettings``: the ``__init__``
of every subclass (a new one included) refuses a non-finite number among its arguments, at any depth
of lists, tuples and mappings, with a ``ConfigError`` naming the class, the argument and the value.
No setting of these classes means "infinite" (an unbounded option is ``null``); tests sweep every
float parameter of every such class (tests/test_finite_settings.py).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Iterator

from lit_align.errors import ConfigError


def non_finite(key: str, value: Any) -> Iterator[tuple[str, float]]:
    """(path, value) of every non-finite float inside ``value`` (nested lists, tuples and dicts)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield key, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from non_finite(f"{key}[{i}]", item)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from non_finite(f"{key}.{name}", item)


def refuse_non_finite(owner: str, arguments: dict[str, Any]) -> None:
    for key, value in arguments.items():
        for path, bad in non_finite(key, value):
            raise ConfigError(f"{owner}: {path} must be a finite number, got {bad!r}")


class FiniteSettings:
    """Mixin: the constructor of this class and of every subclass refuses NaN / inf arguments (see module doc)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_refuses_non_finite", False):
            return
        signature = inspect.signature(init)

        @functools.wraps(init)  # keeps the signature and docstring: they are the command line's --help
        def checked(self, *args: Any, **kw: Any) -> None:
            # (a subclass's super().__init__ repeats the check on what it forwards: a few comparisons)
            bound = signature.bind(self, *args, **kw).arguments
            bound.pop(next(iter(signature.parameters)))  # self
            refuse_non_finite(type(self).__name__, _flatten_var_keyword(bound, signature))
            init(self, *args, **kw)

        checked._refuses_non_finite = True
        cls.__init__ = checked


def _flatten_var_keyword(bound: dict[str, Any], signature: inspect.Signature) -> dict[str, Any]:
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in bound:
            bound = {**{k: v for k, v in bound.items() if k != name}, **bound[name]}
    return bound
