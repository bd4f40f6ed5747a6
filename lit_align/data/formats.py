"""Turning a raw row of any supported format into (prompt text, chosen text, rejected text).

Formats (``auto`` picks by the row's keys):
- explicit: ``{"prompt": str, "chosen": str, "rejected": str}``; the prompt is wrapped as a user
  turn of the chat template when ``chat_template`` is on, else used as raw text.
- conversational: ``prompt``, ``chosen`` and ``rejected`` are lists of ``{"role", "content"}``
  messages; the prompt is always rendered with the chat template.
- implicit: ``{"chosen": transcript, "rejected": transcript}`` sharing a prefix (HH-RLHF); the prompt
  is everything up to and including the last assistant marker, the rest is the completion.
Optional columns: ``score_chosen`` / ``score_rejected`` (ODPO-style offsets) and
``ref_chosen_logps`` / ``ref_rejected_logps`` (reference log-probs computed elsewhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from lit_align.data.sources import DataError

Format = Literal["auto", "explicit", "conversational", "implicit"]
OPTIONAL_PAIRS = (("score_chosen", "score_rejected"), ("ref_chosen_logps", "ref_rejected_logps"))


@dataclass
class TextPair:
    prompt: str  # fully rendered prompt text (chat template applied where relevant)
    chosen: str  # completion text, without EOS
    rejected: str
    scores: tuple[float, float] | None = None
    ref_logps: tuple[float, float] | None = None


def detect_format(row: dict[str, Any]) -> str:
    if "prompt" not in row:
        return "implicit"
    return "conversational" if isinstance(row["prompt"], list) else "explicit"


def why_format(row: dict[str, Any], fmt: str) -> str:
    """Why ``format: auto`` chose ``fmt`` for ``row``, for error messages (a guess can be wrong)."""
    reason = {
        "implicit": "the row has no 'prompt' key",
        "conversational": "'prompt' is a list of messages",
        "explicit": "'prompt' is not a list",
    }[fmt]
    return f"format auto-detected as {fmt} because {reason}; set the data's format to override"


def _require(row: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in row:
        raise DataError(f"{where}: missing field {key!r}")
    if row[key] is None:
        raise DataError(f"{where}: field {key!r} is null")
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = "number" if isinstance(kind, tuple) else {"str": "a string", "list": "a list"}.get(kind.__name__, kind.__name__)
        raise DataError(f"{where}: field {key!r} must be {expected}, got {type(value).__name__}")
    return value


def _messages(value: list, key: str, where: str) -> list[dict[str, str]]:
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or "role" not in message:
            raise DataError(f"{where}: field {key!r} message {i} must be {{'role': ..., 'content': str}}")
    return value


def _conversation_completion(tokenizer, prompt: list, messages: list, key: str, where: str) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    prefix = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + messages, tokenize=False)
    if not full.startswith(prefix):
        raise DataError(f"{where}: field {key!r}: chat template output does not extend the prompt's")
    return full[len(prefix) :]


def split_implicit(chosen: str, rejected: str, marker: str, where: str) -> tuple[str, str, str]:
    """Prompt = the shared prefix up to and including its last ``marker`` (HH-RLHF's Assistant turn)."""
    common = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        common += 1
    cut = chosen.rfind(marker, 0, common)  # the last marker lying wholly inside the shared prefix
    if cut < 0:
        raise DataError(f"{where}: field 'chosen': chosen and rejected share no prefix ending in {marker!r}")
    end = cut + len(marker)
    return chosen[:end], chosen[end:], rejected[end:]


def to_text_pair(row: Any, fmt: Format, tokenizer, chat_template: bool, marker: str, where: str) -> TextPair:
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, dict):
        raise DataError(f"{where}: row must be a JSON object, got {type(row).__name__}")
    if fmt != "auto":
        return _text_pair(row, fmt, tokenizer, chat_template, marker, where)
    fmt = detect_format(row)
    try:
        return _text_pair(row, fmt, tokenizer, chat_template, marker, where)
    except DataError as err:  # name the guess: a typo in a key ('promt') changes the format
        raise DataError(f"{err} ({why_format(row, fmt)})") from None


def _text_pair(row: dict[str, Any], fmt: str, tokenizer, chat_template: bool, marker: str, where: str) -> TextPair:
    if fmt == "explicit":
        prompt = _require(row, "prompt", str, where)
        chosen, rejected = (_require(row, k, str, where) for k in ("chosen", "rejected"))
        if chat_template:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    elif fmt == "conversational":
        prompt_msgs = _messages(_require(row, "prompt", list, where), "prompt", where)
        chosen, rejected = (
            _conversation_completion(tokenizer, prompt_msgs, _messages(_require(row, k, list, where), k, where), k, where)
            for k in ("chosen", "rejected")
        )
        prompt = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
    else:
        prompt, chosen, rejected = split_implicit(
            _require(row, "chosen", str, where), _require(row, "rejected", str, where), marker, where
        )
    for key, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise DataError(f"{where}: field {key!r} is an empty completion")
    if chosen == rejected:
        raise DataError(f"{where}: field 'rejected' is identical to 'chosen'")
    extras = []
    for a, b in OPTIONAL_PAIRS:
        if a in row or b in row:
            pair = tuple(_require(row, k, (int, float), where) for k in (a, b))
            for key, value in zip((a, b), pair):
                if not math.isfinite(value):  # json reads NaN / Infinity; one would make every loss NaN
                    raise DataError(f"{where}: field {key!r} must be a finite number, got {value}")
            extras.append(tuple(float(v) for v in pair))
        else:
            extras.append(None)
    return TextPair(prompt, chosen, rejected, scores=extras[0], ref_logps=extras[1])
