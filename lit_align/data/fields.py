"""Checks of a raw row's fields that need no tokenizer: types, text, chat messages, numbers.

Every failure is a ``DataError`` naming the row's location and the field, so a row of any shape
either parses or is reported in one line (tests/test_data_properties.py checks that over
generated rows).
"""

from __future__ import annotations

import math
from typing import Any

from lit_align.data.sources import DataError

ROLES = ("system", "user", "assistant", "tool")
"""The roles a chat template is written for; any other role would be rendered in a way nobody checked."""

Message = dict[str, str]


def kind_name(value: Any) -> str:
    return type(value).__name__


def require(row: dict[str, Any], key: str, where: str) -> Any:
    """``row[key]``, refusing a missing or null field."""
    if key not in row:
        raise DataError(f"{where}: missing field {key!r}")
    if row[key] is None:
        raise DataError(f"{where}: field {key!r} is null")
    return row[key]


def text(value: Any, key: str, where: str) -> str:
    """A string that is valid Unicode (a lone surrogate, which JSON's \\ud800 escapes can produce, is not:
    tokenizers fail on it without naming the row)."""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key} must be a string, got {kind_name(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        char = value[err.start]
        raise DataError(f"{where}: field {key} holds a lone surrogate {ascii(char)} at character {err.start}, "
                        "which is not valid Unicode text") from None
    return value


def messages(value: Any, key: str, where: str) -> list[Message]:
    """A list of ``{"role", "content"}`` chat messages with known roles and string content."""
    if not isinstance(value, list):
        raise DataError(f"{where}: field {key!r} must be a list of messages, got {kind_name(value)}")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or not isinstance(message.get("content"), str):
            raise DataError(f"{where}: field {key!r} message {i} must be {{'role': ..., 'content': str}}")
        role = message["role"]
        if role not in ROLES:
            shown = ascii(role) if isinstance(role, str) else kind_name(role)
            raise DataError(f"{where}: field {key!r} message {i} has role {shown[:60]}; roles must be one of {', '.join(ROLES)}")
        text(message["content"], f"{key!r} message {i} content", where)
        out.append({"role": role, "content": message["content"]})  # other keys (name, tool_calls ...) are not rendered
    return out


def check_prompt_messages(prompt: list[Message], key: str, where: str) -> None:
    """A prompt is a conversation the model answers: it has a user turn (not only system messages)."""
    if not prompt:
        raise DataError(f"{where}: field {key!r} is an empty conversation (no prompt)")
    if not any(m["role"] in ("user", "tool") for m in prompt):
        roles = ", ".join(m["role"] for m in prompt)
        raise DataError(f"{where}: field {key!r} has no user turn (roles: {roles}); a prompt of only system / assistant "
                        "messages gives the model nothing to answer")


def check_completion_messages(completion: list[Message], key: str, where: str) -> None:
    """A completion is the assistant's answer: it starts with an assistant message and says something."""
    if not completion:
        raise DataError(f"{where}: field {key!r} is an empty completion (no messages after the prompt)")
    if completion[0]["role"] != "assistant":
        raise DataError(f"{where}: field {key!r} must start with an assistant message after the prompt, "
                        f"got role {completion[0]['role']!r}")
    if not any(m["content"].strip() for m in completion):
        raise DataError(f"{where}: field {key!r} is an empty completion")


def shared_prefix(chosen: list[Message], rejected: list[Message]) -> int:
    """The number of leading messages chosen and rejected have in common (the implicit prompt)."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    return n


def number(row: dict[str, Any], key: str, where: str) -> float:
    """A finite number as float (a 401-digit integer overflows float; NaN / inf would make every loss NaN)."""
    value = require(row, key, where)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise DataError(f"{where}: field {key!r} must be a number, got {kind_name(value)}")
    try:
        as_float = float(value)
    except OverflowError:
        raise DataError(f"{where}: field {key!r} must be a finite number, got an integer of {value.bit_length()} bits "
                        "(beyond float range)") from None
    if not math.isfinite(as_float):
        raise DataError(f"{where}: field {key!r} must be a finite number, got {value}")
    return as_float
