"""An incremental reader of one big JSON object whose bulk is in top-level arrays (a
``send_join`` answer's ``state`` and ``auth_chain``, a ``/state`` answer's ``pdus``):
fed bytes as they arrive, it hands back each element of the named arrays as soon as
it is complete, and every other top-level member whole.

Each value is parsed by the standard library's (C) JSON decoder with ``raw_decode``, so
this costs about what ``json.loads`` of the whole answer does, but only one element is
held at a time: memory is bounded by ``max_value`` (an unfinished element, or a scalar
member, larger than that is an error), never by the size of the answer. This is the
"incremental JSON parser ... or equivalent" of issue #11; it adds no dependency (ijson's
pure-Python fallback, the one a Raspberry Pi without its C wheel would get, is many
times slower than the stdlib decoder).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Collection
from dataclasses import dataclass

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class JsonStreamError(ValueError):
    """The stream is not one JSON object of the expected shape, or a value is too big."""


@dataclass(frozen=True, slots=True)
class Item:
    """One element of the top-level array ``key``."""

    key: str
    value: object


@dataclass(frozen=True, slots=True)
class Member:
    """A top-level member that is not streamed (read whole)."""

    key: str
    value: object


class JsonItems:
    """Feed bytes with :meth:`feed` (and call :meth:`close` at the end); each returns
    the :class:`Item` and :class:`Member` values completed so far, in stream order.

    Args:
        streamed: the top-level keys whose array values are handed out per element
            (a streamed key whose value is not an array comes out as a Member).
        max_value: the most characters one element or member may take.
    """

    def __init__(self, streamed: Collection[str], max_value: int = 1 << 20) -> None:
        self._streamed = frozenset(streamed)
        self._max = max_value
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""
        self._pos = 0
        self._state = "start"
        self._key = ""
        self._first_in_array = False

    def feed(self, data: bytes) -> list[Item | Member]:
        try:
            self._buf = self._buf[self._pos :] + self._utf8.decode(data)
        except UnicodeDecodeError as e:
            raise JsonStreamError(f"not UTF-8: {e}") from None
        self._pos = 0
        return self._run(final=False)

    def close(self) -> list[Item | Member]:
        """The end of the stream: the values still pending, or an error if the object
        is not complete."""
        try:
            self._buf = self._buf[self._pos :] + self._utf8.decode(b"", final=True)
        except UnicodeDecodeError as e:
            raise JsonStreamError(f"not UTF-8: {e}") from None
        self._pos = 0
        out = self._run(final=True)
        if self._state != "done":
            raise JsonStreamError("the JSON object ends early")
        return out

    def _skip_ws(self) -> bool:
        """Move past whitespace; False when the buffer is used up."""
        self._pos = _WS.match(self._buf, self._pos).end()  # type: ignore[union-attr]
        return self._pos < len(self._buf)

    def _value(self, final: bool) -> tuple[bool, object]:
        """Parse one value at the position: ``(True, value)``, or ``(False, None)``
        when it is not complete yet."""
        try:
            value, end = _DECODER.raw_decode(self._buf, self._pos)
        except json.JSONDecodeError as e:
            if final or len(self._buf) - self._pos > self._max:
                raise JsonStreamError(f"bad or too big a JSON value: {e}") from None
            return False, None
        if end == len(self._buf) and not final and self._buf[self._pos] not in '{["':
            return False, None  # a number may go on in the next chunk
        if end - self._pos > self._max:
            raise JsonStreamError(f"a JSON value of {end - self._pos} characters")
        self._pos = end
        return True, value

    def _expect(self, chars: str) -> str:
        char = self._buf[self._pos]
        if char not in chars:
            raise JsonStreamError(f"expected one of {chars!r}, found {char!r}")
        self._pos += 1
        return char

    def _run(self, final: bool) -> list[Item | Member]:
        out: list[Item | Member] = []
        while self._state != "done" and self._skip_ws():
            state = self._state
            if state == "start":
                self._expect("{")
                self._state = "key_or_end"
            elif state in ("key_or_end", "key"):
                if state == "key_or_end" and self._buf[self._pos] == "}":
                    self._pos += 1
                    self._state = "done"
                    continue
                if self._buf[self._pos] != '"':
                    raise JsonStreamError("expected a member name")
                done, key = self._value(final)
                if not done:
                    break
                self._key = str(key)
                self._state = "colon"
            elif state == "colon":
                self._expect(":")
                self._state = "value"
            elif state == "value":
                if self._key in self._streamed and self._buf[self._pos] == "[":
                    self._pos += 1
                    self._state = "item_or_end"
                    continue
                done, value = self._value(final)
                if not done:
                    break
                out.append(Member(self._key, value))
                self._state = "after_member"
            elif state == "after_member":
                self._state = "key" if self._expect(",}") == "," else "done"
            elif state in ("item_or_end", "item"):
                if state == "item_or_end" and self._buf[self._pos] == "]":
                    self._pos += 1
                    self._state = "after_member"
                    continue
                done, value = self._value(final)
                if not done:
                    break
                out.append(Item(self._key, value))
                self._state = "after_item"
            elif state == "after_item":
                self._state = "item" if self._expect(",]") == "," else "after_member"
        if self._state == "done" and self._skip_ws():
            raise JsonStreamError("data after the JSON object")
        return out
