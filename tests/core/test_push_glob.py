"""Glob matching and property paths for push rules.

Spec: appendices.md "Glob-style matching" and "Dot-separated property paths";
client-server-api push.md "Conditions" (``event_match``) and "Push Rules"
(word boundaries for ``content.body``).
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketserver.core.push_conditions import lookup_property, split_property_path
from pocketserver.core.push_glob import glob_matches, literal_word_matches

# (pattern, value, matches) for whole-value matching (event_match on keys other
# than content.body).
WHOLE = [
    # push.md "Conditions" event_match example: key content.topic, pattern lunc?*
    ("lunc?*", "Lunch plans", True),
    ("lunc?*", "LUNCH", True),  # case-insensitive; * may match zero characters
    ("lunc?*", " lunch", False),  # leading space
    ("lunc?*", "lunc", False),  # ? must match a character
    ("m.notice", "m.notice", True),
    ("m.notice", "m.noticeX", False),  # whole value
    ("m.notice", "xm.notice", False),
    ("m.notice", "m_notice", False),  # '.' is literal, not a regex dot
    ("", "", True),
    ("", "a", False),
    ("*", "", True),
    ("*", "anything at all", True),
    ("?", "", False),
    ("?", "a", True),
    ("?", "ab", False),
    ("??", "ab", True),
    ("a*", "a", True),
    ("a*", "ba", False),
    ("*a", "ba", True),
    ("*a", "ab", False),
    ("a*b*c", "abc", True),
    ("a*b*c", "a--b--c", True),
    ("a*b*c", "a--c--b", False),
    ("a*b*c", "acb", False),
    ("a*a", "a", False),  # first and last segments may not overlap
    ("a*a", "aa", True),
    ("*?*", "", False),
    ("*?*", "x", True),
    ("**", "x", True),
    ("[a-z]", "[a-z]", True),  # no character classes: brackets are literal
    ("[a-z]", "b", False),
    ("a+", "aa", False),  # regex syntax is literal
    ("a+", "A+", True),
    ("\\*", "\\x", True),  # no escapes: backslash is literal, * is a wildcard
    ("\\*", "*", False),
    ("a?c", "a\nc", True),  # "?" matches any character, newline included
    ("a*c", "a\n\nc", True),
    ("@alice:example.org", "@alice:example.org", True),
    ("@alice:example.org", "@Alice:Example.org", True),
    # unicode case folding (simple, one character to one character)
    ("é", "É", True),
    ("straße", "STRAẞE", True),
    ("σ", "ς", True),
    ("k", "\u212a", True),  # KELVIN SIGN folds to k
    ("?", "é", True),
    ("ß", "SS", False),  # full folding is not used: ? keeps meaning one character
]

# (pattern, body, matches) for content.body: any substring at word boundaries.
WORD = [
    # push.md "Conditions" content.body example: pattern ex*ple
    ("ex*ple", "An example event.", True),
    ("ex*ple", "exple", True),  # can match at the start and end of the body
    ("ex*ple", "An exciting triple-whammy", True),  # spans words; '-' separates
    ("ex*ple", "examples", False),  # must end at a word boundary
    ("ex*ple", "reexample", False),  # must start at a word boundary
    ("cake", "I like cake!", True),
    ("cake", "I like cakes", False),
    ("cake", "pancake", False),
    ("cake", "CAKE", True),
    ("cake", "(cake)", True),
    ("cake", "cake_", False),  # '_' is a word character
    ("cake", "_cake", False),
    ("cake", "cake9", False),  # digits are word characters
    ("cake", "cake.", True),
    ("cake", "x\ncake\ny", True),
    ("cake", "", False),
    ("cake", "a,cake;b", True),
    # The spec's word characters are ASCII only: other letters are boundaries.
    ("caf", "café", True),
    ("café", "CAFÉ au lait", True),
    ("cafe", "café", False),
    ("иван", "Привет, Иван!", True),
    # A substring may start or end with a boundary character itself.
    ("@room", "hey@room", True),
    ("@room", "@room!", True),
    ("@room", "@roomy", False),
    ("room!", "room!x", True),
    ("-x", "a-x", True),
    ("x-", "x-a", True),
    ("?", "a", True),
    ("?", "ab", False),
    ("?", "a b", True),
    ("??", "a bc", True),
    ("a?c", "xabc", False),
    ("a?c", "x abc", True),
    ("*", "", True),
    ("*", "anything", True),
    ("", "anything", True),  # the empty substring at the start
    ("a*", "a", True),
    ("a*", "ba", False),
    ("*a", "ab", False),
    ("*a", "b a", True),
    ("a*b*c", "xa b c", False),
    ("a*b*c", "x a b c", True),
    ("a*b*c", "x a b cx", False),
    ("a*b*c", "x a b cx c", True),
    ("ti*e", "it's time for tea", True),
    ("t?a", "it's time for tea", True),
    ("t?a", "it's time for teas", False),
]


@pytest.mark.parametrize(("pattern", "value", "expected"), WHOLE)
def test_whole_value_glob(pattern: str, value: str, expected: bool) -> None:
    assert glob_matches(pattern, value) is expected


@pytest.mark.parametrize(("pattern", "value", "expected"), WORD)
def test_word_boundary_glob(pattern: str, value: str, expected: bool) -> None:
    assert glob_matches(pattern, value, word_boundary=True) is expected


LITERAL = [
    ("Alice", "hello alice!", True),
    ("Alice", "hello alices", False),
    ("Alice", "malice", False),
    ("Alice", "ALICE", True),
    ("a*e", "abcde", False),  # display names are literal, not globs
    ("a*e", "say a*e now", True),
    ("a?", "ab", False),
    ("[Bot]", "hi [bot]", True),
    ("[Bot]", "hi x[bot]y", True),  # starts and ends with boundary characters
    ("Dr. Who", "ask dr. who?", True),
    ("", "anything", False),  # an empty display name never matches
    ("Zoë", "zoë is here", True),
]


@pytest.mark.parametrize(("needle", "value", "expected"), LITERAL)
def test_literal_word_match(needle: str, value: str, expected: bool) -> None:
    assert literal_word_matches(needle, value) is expected


def _reference_word_match(pattern: str, value: str) -> bool:
    """Brute force over every substring, straight from the spec's definition."""

    def boundary(i: int) -> bool:
        def word(c: str) -> bool:
            return c.isascii() and (c.isalnum() or c == "_")

        return i in (0, len(value)) or not word(value[i - 1]) or not word(value[i])

    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    compiled = re.compile(regex, re.IGNORECASE | re.DOTALL)
    return any(
        boundary(i) and boundary(j) and compiled.fullmatch(value[i:j])
        for i in range(len(value) + 1)
        for j in range(i, len(value) + 1)
    )


_ALPHABET = st.sampled_from(list("ab_ -*?.A\né"))


@settings(max_examples=300, deadline=None)
@given(pattern=st.text(_ALPHABET, max_size=6), value=st.text(_ALPHABET, max_size=10))
def test_word_match_agrees_with_brute_force(pattern: str, value: str) -> None:
    expected = _reference_word_match(pattern, value)
    assert glob_matches(pattern, value, word_boundary=True) is expected


@settings(max_examples=300, deadline=None)
@given(pattern=st.text(_ALPHABET, max_size=6), value=st.text(_ALPHABET, max_size=10))
def test_whole_match_agrees_with_regex(pattern: str, value: str) -> None:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    expected = re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None
    assert glob_matches(pattern, value) is expected


def test_pathological_pattern_is_fast() -> None:
    # A naive ".*a.*a.*..." regex backtracks catastrophically on this input.
    body = "a" * 20_000
    pattern = "*a" * 12 + "*b"
    start = time.perf_counter()
    assert not glob_matches(pattern, body, word_boundary=True)
    assert not glob_matches(pattern, body)
    assert time.perf_counter() - start < 2.0


# appendices.md "Dot-separated property paths"
PATHS = [
    ("content.body", ("content", "body")),
    ("type", ("type",)),
    ("content.m\\.relates_to", ("content", "m.relates_to")),
    ("content.m\\\\foo", ("content", "m\\foo")),
    ("content.m\\x", ("content", "m\\x")),  # other escapes are left as-is
    ("content.m\\", ("content", "m\\")),  # trailing backslash is literal
    ("a\\\\.b", ("a\\", "b")),  # escaped backslash, then a separator
    ("a\\\\\\.b", ("a\\.b",)),
    ("", ("",)),
    ("a..b", ("a", "", "b")),
    ("content.m\\.mentions.user_ids", ("content", "m.mentions", "user_ids")),
]


@pytest.mark.parametrize(("key", "parts"), PATHS)
def test_split_property_path(key: str, parts: tuple[str, ...]) -> None:
    assert split_property_path(key) == parts


LOOKUPS = [
    ({"content": {"body": "x"}}, "content.body", (True, "x")),
    (
        {"content": {"m.relates_to": {"rel_type": "r"}}},
        "content.m\\.relates_to.rel_type",
        (True, "r"),
    ),
    (
        {"content": {"m.relates_to": {"rel_type": "r"}}},
        "content.m.relates_to.rel_type",
        (False, None),
    ),
    ({"content": {"m\\foo": 1}}, "content.m\\\\foo", (True, 1)),
    ({"content": {"m\\x": 1}}, "content.m\\x", (True, 1)),
    ({"content": {"a": None}}, "content.a", (True, None)),
    ({"content": {"a": [1]}}, "content.a.0", (False, None)),  # no indexing into arrays
    ({"content": "str"}, "content.body", (False, None)),
    ({}, "content", (False, None)),
    ({"": {"": 5}}, ".", (True, 5)),
]


@pytest.mark.parametrize(("event", "key", "expected"), LOOKUPS)
def test_lookup_property(event: dict[str, object], key: str, expected: tuple[bool, object]) -> None:
    assert lookup_property(event, key) == expected
