"""Judge replies that are not one clear verdict are invalid (never scored, never cached), over many shapes.

A reply stating two different verdicts used to be scored by its first one (FastChat's rule: a judge
quoting the prompt's "Rating: [[5]]" example before its own rating scored 5), and a log-prob reply
whose identifiers were both at -inf gave a NaN preference that counted as valid.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals.judge.parsing import (alpaca_preference, alpaca_problem, pair_verdict_problem, parse_pair_verdict,
                                 parse_rating, rating_problem)

RATING_SHAPES = [  # (reply, the rating it states or None when it states no single valid one)
    ("Rating: [[8]]", 8.0),
    ("[[7.5]]", 7.5),
    ("[[7.]]", 7.0),
    ("[[8]] and again [[8.0]]", 8.0),  # the same rating twice is one rating
    ("[1] is cited, then Rating: [[4]]", 4.0),  # [[N]] wins over the [N] fallback
    ("Rating: [6]", 6.0),  # FastChat's fallback
    ("[[ 8 ]]", None),
    ("Rating: 8", None),
    ("Rating: 8/10", None),
    ('The format is "Rating: [[5]]". My rating: [[8]]', None),
    ("[[3]] ... on reflection [[9]]", None),
    ("see [1] and [2]", None),
    ("[[-3]]", None),
    ("[[1e9]]", None),
    ("[[nan]]", None),
    ("[[inf]]", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize("reply, expected", RATING_SHAPES)
def test_a_rating_is_read_only_when_the_reply_states_exactly_one(reply, expected):
    assert parse_rating(reply) == expected
    assert (rating_problem(reply) is None) == (expected is not None and 1 <= expected <= 10)


@pytest.mark.parametrize("reply", ["[[0]]", "[[10.5]]", "[[999]]", "[[10.0000001]]", "[[0.99]]"])
def test_out_of_scale_ratings_are_invalid(reply):
    assert "outside the scale" in rating_problem(reply)


@given(st.integers(1, 10), st.integers(1, 10), st.text(alphabet="abc .:\n", max_size=20))
def test_two_different_ratings_are_never_a_verdict(a, b, filler):
    reply = f"Rating: [[{a}]]{filler}Rating: [[{b}]]"
    if a == b:
        assert parse_rating(reply) == a and rating_problem(reply) is None
    else:
        assert parse_rating(reply) is None and "several different ratings" in rating_problem(reply)


PAIR_SHAPES = [
    ("so [[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie"), ("[[A]] [[A]]", "A"),
    ("[[A]] no wait [[B]]", None), ("[[B]] or [[C]]", None), ("[[A]][[B]][[C]]", None),
    ("[[D]]", None), ("[[a]]", None), ("A is better", None), ("[A]", None), (None, None),
]


@pytest.mark.parametrize("reply, expected", PAIR_SHAPES)
def test_a_pair_verdict_is_read_only_when_the_reply_states_exactly_one(reply, expected):
    assert parse_pair_verdict(reply) == expected
    assert (pair_verdict_problem(reply) is None) == (expected is not None)


NEG_INF = -math.inf
ALPACA_SHAPES = [  # (content, first token's top log-probs, preference or None)
    ("m", [{"token": "m", "logprob": NEG_INF}, {"token": "M", "logprob": NEG_INF}], 1.0),  # no weight: the content
    (None, [{"token": "m", "logprob": NEG_INF}], None),
    (None, [{"token": "M", "logprob": NEG_INF}, {"token": "x", "logprob": -0.1}], None),
    (None, [{"token": "m", "logprob": NEG_INF}, {"token": "M", "logprob": -2.0}], 2.0),
    (None, [{"token": "m", "logprob": -1e308}, {"token": "M", "logprob": -1e308}], 1.5),
    (None, [{"token": "x", "logprob": -0.1}], None),
    ("mM", None, None),
]


@pytest.mark.parametrize("content, top, expected", ALPACA_SHAPES)
def test_an_alpaca_preference_is_finite_or_invalid(content, top, expected):
    pref = alpaca_preference(content, top)
    assert pref == (pytest.approx(expected) if expected is not None else None)
    assert (alpaca_problem(content, top) is None) == (expected is not None)


@given(st.lists(st.tuples(st.sampled_from(["m", "M", " m", "x"]),
                          st.one_of(st.just(NEG_INF), st.floats(-1e308, 0.0))), max_size=5),
       st.sampled_from([None, "m", "M", "junk"]))
def test_every_valid_alpaca_preference_is_in_the_scale(entries, content):
    top = [{"token": t, "logprob": lp} for t, lp in entries]
    pref = alpaca_preference(content, top)
    assert (pref is None) == (alpaca_problem(content, top) is not None)
    if pref is not None:
        assert math.isfinite(pref) and 1.0 <= pref <= 2.0
