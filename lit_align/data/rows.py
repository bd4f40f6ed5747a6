"""Reading one split of one source into checked rows (no tokenizer), then into tokenised pairs.

The first step runs when the data module is built, so a bad row stops a run before any tokenizer or
model loads; the second at setup. Both report a bad row in one line naming file, row and field
(``on_bad_row: skip`` counts and drops it instead).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from lit_align.data.formats import Format, ParsedPair, parse_row, render
from lit_align.data.sources import DataError, iter_rows
from lit_align.data.tokenize import TokenizedPair, tokenize_pair


@dataclass
class Part:
    """The checked rows of one split of one source."""

    label: str  # path[split], for reports
    rows: list[tuple[str, ParsedPair]]  # (location, row)
    counts: Counter = field(default_factory=Counter)


def extras_of(pair: ParsedPair) -> tuple[bool, bool]:
    return pair.scores is not None, pair.ref_logps is not None


def read_part(path: str, split: str, fmt: Format, marker: str, on_bad_row: str, limit: int | None) -> Part:
    """Every row of ``path``'s ``split`` checked (the first ``limit`` rows)."""
    part = Part(f"{path}[{split}]", [])
    counts = part.counts
    counts["rows"] = 0
    first_extras: tuple[str, tuple[bool, bool]] | None = None
    for location, row in iter_rows(path, split):
        if limit is not None and counts["rows"] >= limit:
            break
        counts["rows"] += 1
        try:
            pair = parse_row(row, fmt, marker, location)
        except DataError:
            if on_bad_row == "error":
                raise
            counts["bad_rows_skipped"] += 1
            continue
        if first_extras is None:
            first_extras = (location, extras_of(pair))
        elif extras_of(pair) != first_extras[1]:  # collation stacks them per batch: all rows or none
            raise DataError(f"{location}: score / ref_*_logps columns must be present on every row or none "
                            f"(this row differs from {first_extras[0]})")
        part.rows.append((location, pair))
    return part


EXTRAS = ("scores", "ref_logps")  # ParsedPair's optional columns (formats.OPTIONAL_PAIRS), by attribute


def keep_common_extras(parts: list[Part]) -> None:
    """Drop the optional columns (scores, reference log-probs) that some sources of one split lack.

    Collation stacks a column per batch, so a mixed split carries one only if every source does; a
    mix of, say, ultrafeedback (scored) and HH-RLHF (unscored) then trains without scores, which is
    counted in the ``[data]`` line (``scores_dropped``); a loss that needs them (ODPO) refuses the
    batch in one line. Within one source the columns are still all-or-none (``read_part``).
    """
    parts = [p for p in parts if p.rows]
    for name in EXTRAS:
        has = [getattr(p.rows[0][1], name) is not None for p in parts]
        if any(has) and not all(has):
            for part, had in zip(parts, has):
                if had:
                    part.rows = [(where, replace(pair, **{name: None})) for where, pair in part.rows]
                    part.counts[f"{name}_dropped"] = len(part.rows)


def tokenize_part(part: Part, tokenizer, chat_template: bool, max_length: int, max_prompt_length: int,
                  on_bad_row: str) -> list[TokenizedPair]:
    """The part's rows rendered and tokenised (index = position in the part; set again after mixing)."""
    pairs: list[TokenizedPair] = []
    for location, row in part.rows:
        try:
            text = render(row, tokenizer, chat_template, location)
            pair = tokenize_pair(text, tokenizer, len(pairs), max_length, max_prompt_length, part.counts, where=location)
        except DataError:
            if on_bad_row == "error":
                raise
            part.counts["bad_rows_skipped"] += 1
            continue
        if pair is not None:
            pairs.append(pair)
    return pairs
