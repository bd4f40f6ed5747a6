"""User errors: what ``cli.py`` reports as one line on stderr, without a traceback.

A ``UserError`` is a problem with the input (a config value, a data row, a file or a model path),
not with the code: its message names the file / row / key / value, so it is all the user needs.
It subclasses ``ValueError`` so that code catching ``ValueError`` keeps working.
"""

from __future__ import annotations

import math
from typing import Any


class UserError(ValueError):
    """A bad input (setting, file, row, path); the message says which one and what is wrong."""


class ConfigError(UserError):
    """An invalid setting, or an impossible combination of settings, named by its key."""


class NonFiniteLossError(UserError):
    """Training produced a NaN / inf loss or gradient; raised before the optimizer step could apply it."""


class NonFiniteWeightsError(UserError):
    """Weights with NaN / inf values that were about to be saved, exported or evaluated."""


def check_number(key: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> Any:
    """``value`` if it is a finite number within the bounds, else a ``ConfigError`` naming ``key``.

    Bounds are inclusive unless ``low_open`` / ``high_open``; ``integer`` also refuses non-integers.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        kind = "an integer" if integer else "a number"
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise ConfigError(f"{key} must be {kind}{' ' + bounds if bounds else ''}, got {value!r}")
    return value


class CheckpointMismatchError(UserError, RuntimeError):
    """A checkpoint whose weights do not fit the configured module (another model or loss)."""
