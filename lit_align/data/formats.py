"""A raw row of any supported format -> a checked ``ParsedPair`` -> (prompt text, chosen text, rejected text).

The formats are TRL's preference formats, as datasets publish them (``auto`` picks by the row's keys
and types; docs/data-formats.md has an example row of each):
- explicit (standard, explicit prompt): ``{"prompt": str, "chosen": str, "rejected": str}``; the prompt
  is wrapped as a user turn of the chat template when ``chat_template`` is on, else used as raw text.
- conversational (explicit prompt): ``prompt``, ``chosen`` and ``rejected`` are lists of
  ``{"role", "content"}`` messages; the completions start with the assistant's turn. Also a string
  ``prompt`` with ``chosen`` / ``rejected`` as whole conversations that begin with the user turn
  (HuggingFaceH4/ultrafeedback_binarized): as TRL does, the prompt is the messages chosen and rejected
  share; the string must be that prefix's last user turn. A string prompt beside completions that
  start with the assistant's turn is that user turn.
- implicit (no ``prompt`` key): ``chosen`` and ``rejected`` hold the whole dialogue. Strings (HH-RLHF
  transcripts): the prompt runs to the last assistant marker inside their shared prefix; plain texts
  with no marker: their shared prefix (as TRL). Message lists: the leading messages they share.
Optional columns: ``score_chosen`` / ``score_rejected`` (ODPO-style offsets) and
``ref_chosen_logps`` / ``ref_rejected_logps`` (reference log-probs computed elsewhere). Other columns
(``messages``, ``prompt_id`` ...) are ignored.

Parsing needs no tokenizer, so the data module checks every row when it is built, before any model
or tokenizer loads; rendering applies the chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lit_align.data import fields
from lit_align.data.fields import Message
from lit_align.data.sources import DataError

Format = Literal["auto", "explicit", "conversational", "implicit"]
OPTIONAL_PAIRS = (("score_chosen", "score_rejected"), ("ref_chosen_logps", "ref_rejected_logps"))


@dataclass
class ParsedPair:
    """A checked row: text (explicit / implicit transcripts) or chat messages (prompt and completions)."""

    prompt: str | list[Message]
    chosen: str | list[Message]  # the completion only (the prompt removed)
    rejected: str | list[Message]
    scores: tuple[float, float] | None = None
    ref_logps: tuple[float, float] | None = None
    user_turn: bool = False  # a string prompt that is the user's turn (explicit format), not a transcript


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
    return "conversational" if isinstance(row["prompt"], list) or isinstance(row.get("chosen"), list) else "explicit"


def why_format(row: dict[str, Any], fmt: str) -> str:
    """Why ``format: auto`` chose ``fmt`` for ``row``, for error messages (a guess can be wrong)."""
    reason = {
        "implicit": "the row has no 'prompt' key",
        "conversational": "'prompt' or 'chosen' is a list of messages",
        "explicit": "neither 'prompt' nor 'chosen' is a list",
    }[fmt]
    return f"format auto-detected as {fmt} because {reason}; set the data's format to override"


def split_implicit(chosen: str, rejected: str, marker: str, where: str) -> tuple[str, str, str]:
    """Prompt = the shared prefix up to and including its last ``marker`` (HH-RLHF's Assistant turn).

    Texts with no marker at all (TRL's standard implicit prompt, ``"The sky is blue."`` /
    ``"The sky is green."``) split as TRL's ``extract_prompt`` does: the whole shared prefix, less a
    space just before the difference, which goes to the completions.
    """
    common = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        common += 1
    cut = chosen.rfind(marker, 0, common)  # the last marker lying wholly inside the shared prefix
    if cut >= 0:
        end = cut + len(marker)
    elif marker and (marker in chosen or marker in rejected):  # a transcript whose turns diverge before an answer
        raise DataError(f"{where}: field 'chosen': chosen and rejected share no prefix ending in {marker!r}")
    else:
        end = common - 1 if 0 < common < min(len(chosen), len(rejected)) and chosen[common - 1] == " " else common
        if end == 0:
            raise DataError(f"{where}: field 'chosen': chosen and rejected share no prefix, so there is no prompt")
    return chosen[:end], chosen[end:], rejected[end:]


def _implicit_messages(chosen: list[Message], rejected: list[Message], where: str) -> tuple[list, list, list]:
    n = fields.shared_prefix(chosen, rejected)
    if n == 0:
        raise DataError(f"{where}: field 'chosen': chosen and rejected share no leading messages, so there is no prompt "
                        "(an implicit-prompt row holds the whole conversation in both)")
    if n == len(chosen) or n == len(rejected):
        raise DataError(f"{where}: field 'rejected' is identical to 'chosen' or a prefix of it (nothing left to compare)")
    return chosen[:n], chosen[n:], rejected[n:]


def _conversational(row: dict[str, Any], where: str) -> tuple[Any, Any, Any]:
    chosen, rejected = (fields.messages(fields.require(row, k, where), k, where) for k in ("chosen", "rejected"))
    prompt = fields.require(row, "prompt", where)
    if isinstance(prompt, list):
        return fields.messages(prompt, "prompt", where), chosen, rejected
    prompt = fields.text(prompt, "'prompt'", where)
    if chosen and rejected and chosen[0]["role"] == rejected[0]["role"] == "assistant":  # the answers alone
        return [{"role": "user", "content": prompt}], chosen, rejected
    # a string prompt beside whole conversations (ultrafeedback_binarized): the shared messages are the prompt
    shared, chosen, rejected = _implicit_messages(chosen, rejected, where)
    users = [m["content"].strip() for m in shared if m["role"] == "user"]
    if not users or users[-1] != prompt.strip():
        raise DataError(f"{where}: field 'prompt' is not the last user turn of the messages chosen and rejected begin with; "
                        "either give 'prompt' as the list of prompt messages, or drop it")
    return shared, chosen, rejected


def _parse(row: dict[str, Any], fmt: str, marker: str, where: str) -> ParsedPair:
    if fmt == "explicit":
        prompt, chosen, rejected = (fields.text(fields.require(row, k, where), repr(k), where) for k in ("prompt", "chosen", "rejected"))
    elif fmt == "conversational":
        prompt, chosen, rejected = _conversational(row, where)
    else:
        chosen, rejected = (fields.require(row, k, where) for k in ("chosen", "rejected"))
        if isinstance(chosen, list) or isinstance(rejected, list):
            chosen, rejected = (fields.messages(row[k], k, where) for k in ("chosen", "rejected"))
            prompt, chosen, rejected = _implicit_messages(chosen, rejected, where)
        else:
            chosen, rejected = (fields.text(row[k], repr(k), where) for k in ("chosen", "rejected"))
            prompt, chosen, rejected = split_implicit(chosen, rejected, marker, where)
    if isinstance(prompt, list):
        fields.check_prompt_messages(prompt, "prompt", where)
        for key, completion in (("chosen", chosen), ("rejected", rejected)):
            fields.check_completion_messages(completion, key, where)
    else:
        for key, completion in (("chosen", chosen), ("rejected", rejected)):
            if not completion.strip():
                raise DataError(f"{where}: field {key!r} is an empty completion")
    if chosen == rejected:
        raise DataError(f"{where}: field 'rejected' is identical to 'chosen'")
    extras = []
    for a, b in OPTIONAL_PAIRS:
        extras.append(tuple(fields.number(row, k, where) for k in (a, b)) if a in row or b in row else None)
    return ParsedPair(prompt, chosen, rejected, scores=extras[0], ref_logps=extras[1], user_turn=fmt == "explicit")


def parse_row(row: Any, fmt: Format, marker: str, where: str) -> ParsedPair:
    """Check a raw row (no tokenizer needed): a ``ParsedPair``, or a ``DataError`` naming ``where`` and the field."""
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, dict):
        raise DataError(f"{where}: row must be a JSON object, got {type(row).__name__}")
    if "chosen" not in row and "completion" in row and "label" in row:
        raise DataError(f"{where}: an unpaired preference row (prompt, completion, label) is KTO's format; "
                        "lit-align trains on pairs: give 'chosen' and 'rejected'")
    if fmt != "auto":
        return _parse(row, fmt, marker, where)
    fmt = detect_format(row)
    try:
        return _parse(row, fmt, marker, where)
    except DataError as err:  # name the guess: a typo in a key ('promt') changes the format
        raise DataError(f"{err} ({why_format(row, fmt)})") from None


def _template(tokenizer, messages: list[Message], where: str, **kwargs) -> str:
    """The tokenizer's chat template; its own failures (a template that rejects a role order, say) name the row."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as err:  # noqa: BLE001 - any template error is this row's (jinja raises its own classes)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(f"{where}: the tokenizer's chat template failed on this row ({type(err).__name__}: {first[:200]})") from None


def _completion_text(tokenizer, prompt: list[Message], completion: list[Message], key: str, where: str) -> str:
    if len(completion) == 1:
        return completion[0]["content"]
    prefix = _template(tokenizer, prompt, where, add_generation_prompt=True)
    full = _template(tokenizer, prompt + completion, where)
    if not full.startswith(prefix):
        raise DataError(f"{where}: field {key!r}: chat template output does not extend the prompt's")
    return full[len(prefix) :]


def render(pair: ParsedPair, tokenizer, chat_template: bool, where: str) -> TextPair:
    """Prompt and completion texts: chat messages through the tokenizer's template."""
    if isinstance(pair.prompt, list):
        chosen, rejected = (_completion_text(tokenizer, pair.prompt, c, k, where) for k, c in (("chosen", pair.chosen), ("rejected", pair.rejected)))
        prompt = _template(tokenizer, pair.prompt, where, add_generation_prompt=True)
    else:
        prompt, chosen, rejected = pair.prompt, pair.chosen, pair.rejected
        if chat_template and pair.user_turn:
            prompt = _template(tokenizer, [{"role": "user", "content": prompt}], where, add_generation_prompt=True)
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        if not value.strip():
            raise DataError(f"{where}: field {key!r} is an empty completion")
    if chosen == rejected:
        raise DataError(f"{where}: field 'rejected' is identical to 'chosen' once rendered by the chat template")
    return TextPair(prompt, chosen, rejected, scores=pair.scores, ref_logps=pair.ref_logps)


def to_text_pair(row: Any, fmt: Format, tokenizer, chat_template: bool, marker: str, where: str) -> TextPair:
    """``render(parse_row(...))``: one raw row to texts."""
    return render(parse_row(row, fmt, marker, where), tokenizer, chat_template, where)
