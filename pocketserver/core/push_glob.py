"""Glob matching for push rules: whole-value and word-boundary matches.

Spec: appendices.md "Glob-style matching" (``*`` matches zero or more characters,
``?`` exactly one; there is no escape syntax) and client-server-api
``modules/push.md`` "Push Rules" / "Conditions" (``event_match``): the match is
case-insensitive and must match the *entire* value, except for ``content.body``
where the pattern must match any substring "which starts and ends at a word
boundary", a word boundary being "the start or end of the value, or any character
not in the sets ``[A-Z]``, ``[a-z]``, ``[0-9]`` or ``_``".

Interpretation choices (documented, tested):

* A substring ``s[i:j]`` starts at a word boundary when ``i`` is the start of the
  value, the character before it is a boundary character, or its own first
  character is one (so ``@room`` matches in ``hey@room``); likewise at ``j``. This is
  what Synapse does, and it lets patterns that begin or end with punctuation match.
* Word characters are the ASCII ones the spec lists. Synapse uses Unicode word
  characters instead (so for Synapse ``caf`` does not match in ``café``; here it
  does, as the spec's definition says). We follow the spec.
* ``*`` and ``?`` match any character including a newline (the spec says "any
  character"; Synapse's regex ``.`` skips newlines).
* "Case-insensitive" is implementation-defined; we use Python's ``re.IGNORECASE``
  simple case folding, which maps one character to one character (``É``/``é``,
  ``Σ``/``σ``/``ς``, Kelvin sign/``k``) and keeps ``?`` meaning one character.

The matcher never backtracks across ``*``: a pattern is split into fixed-length
segments and placed greedily (leftmost), which is exact for globs and takes
``O(len(value) * len(pattern))`` time, so a hostile pattern or body cannot make it
explode the way a naive ``.*`` regex can.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = ["glob_matches", "literal_word_matches"]

_WORD = "(?-i:[A-Za-z0-9_])"
# A position is a boundary if the character before it or the one at it is not a word
# character (a missing character, at either end of the value, counts as a boundary).
_BOUNDARY = f"(?:(?<!{_WORD})|(?!{_WORD}))"
_FLAGS = re.IGNORECASE | re.DOTALL
_WILDCARD_RUNS = re.compile(r"\*+")


@dataclass(frozen=True, slots=True)
class _Glob:
    """A compiled glob: fixed-length segments separated by ``*`` runs."""

    segments: tuple[str, ...]  # regex sources, one per segment (``?`` -> ``.``)
    lengths: tuple[int, ...]  # characters each segment matches


def _segment_regex(segment: str, *, literal: bool) -> str:
    if literal:
        return re.escape(segment)
    return "".join("." if c == "?" else re.escape(c) for c in segment)


@functools.lru_cache(maxsize=256)
def _compile(pattern: str, literal: bool) -> _Glob:
    parts = [pattern] if literal else _WILDCARD_RUNS.split(pattern)
    return _Glob(
        segments=tuple(_segment_regex(p, literal=literal) for p in parts),
        lengths=tuple(len(p) for p in parts),
    )


@functools.lru_cache(maxsize=512)
def _regex(source: str) -> re.Pattern[str]:
    return re.compile(source, _FLAGS)


def _place_middle(glob: _Glob, value: str, start: int, end: int) -> int | None:
    """Place the inner segments leftmost in ``value[start:end]``; return where they end."""
    pos = start
    for source in glob.segments[1:-1]:
        found = _regex(source).search(value, pos, end)
        if found is None:
            return None
        pos = found.end()
    return pos


def _whole(glob: _Glob, value: str) -> bool:
    if len(glob.segments) == 1:
        return _regex(glob.segments[0]).fullmatch(value) is not None
    first, last = glob.lengths[0], glob.lengths[-1]
    tail = len(value) - last
    if first > tail:
        return False
    if _regex(glob.segments[0]).match(value, 0, first) is None:
        return False
    if _regex(glob.segments[-1]).fullmatch(value, tail) is None:
        return False
    return _place_middle(glob, value, first, tail) is not None


def _word(glob: _Glob, value: str) -> bool:
    if len(glob.segments) == 1:
        source = _BOUNDARY + glob.segments[0] + _BOUNDARY
        return _regex(source).search(value) is not None
    # With at least one ``*`` the leftmost possible start is always the best one:
    # every later placement of the remaining segments is then at least as early.
    head = _regex(_BOUNDARY + glob.segments[0]).search(value)
    if head is None:
        return False
    pos = _place_middle(glob, value, head.end(), len(value))
    if pos is None:
        return False
    return _regex(glob.segments[-1] + _BOUNDARY).search(value, pos) is not None


def glob_matches(pattern: str, value: str, *, word_boundary: bool = False) -> bool:
    """Whether the glob ``pattern`` matches ``value``, case-insensitively.

    Spec: appendices.md "Glob-style matching"; client-server-api push.md
    "Conditions" (``event_match``) and "Push Rules" (``content`` rules).

    Args:
        pattern: The glob; ``*`` matches zero or more characters, ``?`` exactly one.
        value: The string to test.
        word_boundary: False to require the pattern to match all of ``value``;
            True (``content.body``) to accept any substring of ``value`` that starts
            and ends at a word boundary.

    Returns:
        True if it matches.
    """
    glob = _compile(pattern, False)
    return _word(glob, value) if word_boundary else _whole(glob, value)


def literal_word_matches(needle: str, value: str) -> bool:
    """Whether ``needle`` occurs in ``value`` between word boundaries, ignoring case.

    Used by the ``contains_display_name`` condition (push.md "Conditions"): the
    display name is taken literally (``*`` and ``?`` in a name are not wildcards).

    Args:
        needle: The literal text, e.g. a display name. An empty needle never matches.
        value: The text searched, e.g. ``content.body``.

    Returns:
        True if found at word boundaries.
    """
    if not needle:
        return False
    return _word(_compile(needle, True), value)
