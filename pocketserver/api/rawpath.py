"""Routing on the path as sent, so an encoded ``/`` (``%2F``) stays inside its segment.

The ASGI ``path`` is already percent-decoded: ``/send/m.room.message/a%2Fb`` reaches
Werkzeug as ``/send/m.room.message/a/b`` and either matches no rule or the wrong one.
Transaction IDs, account-data types, media file names (matrix-nio puts a whole local path
there), state keys and room-v1-3 event IDs may all hold a ``/``.

So the app matches rules against :func:`routing_path`: the raw path (the server's
``raw_path``) with every escape decoded *except* ``%2F`` and ``%25``, which are kept
(upper-cased). Static parts of a rule match as before (an escaped letter still matches),
while a segment never splits on an encoded ``/``. The converters below then decode those
two escapes in each variable after matching, so views get the value the client meant.
A literal ``/`` in an event ID sent unencoded still reaches ``<path:...>`` rules whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from quart.routing import QuartRule
from werkzeug.routing import BaseConverter, Map, PathConverter, Rule, UnicodeConverter

_KEPT = re.compile(r"%(?:2[fF]|25)")
_ENCODED = re.compile(r"%2F|%25")


def routing_path(scope: Mapping[str, Any]) -> str:
    """The path Werkzeug matches: decoded, except ``%2F`` and ``%25`` (normalised)."""
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes):
        # No raw path (an ASGI server that omits it): a decoded "/" is lost already;
        # keep a decoded "%" from being read as an escape.
        return str(scope["path"]).replace("%", "%25")
    text = raw.decode("latin-1")
    out: list[str] = []
    pos = 0
    for m in _KEPT.finditer(text):
        out.append(unquote(text[pos : m.start()]))
        out.append(m.group().upper())
        pos = m.end()
    out.append(unquote(text[pos:]))
    return "".join(out)


def decode_segment(value: str) -> str:
    """Undo the two escapes :func:`routing_path` keeps, in one pass."""
    return _ENCODED.sub(lambda m: "/" if m.group() == "%2F" else "%", value)


class SegmentConverter(UnicodeConverter):
    """``<name>``: one segment, which may hold an encoded ``/``."""

    def to_python(self, value: str) -> str:
        return decode_segment(value)


class RestConverter(PathConverter):
    """``<path:name>``: the rest of the path, slashes and all."""

    def to_python(self, value: str) -> str:
        return decode_segment(value)


def install(url_map: Map) -> None:
    """Use the decoding converters for every rule added to ``url_map`` from now on."""
    converters: dict[str, type[BaseConverter]] = {
        "default": SegmentConverter,
        "string": SegmentConverter,
        "path": RestConverter,
    }
    url_map.converters.update(converters)


class LazyBuildRule(QuartRule):
    """A rule whose URL builders are compiled on first use.

    werkzeug compiles two Python functions per rule (``exec`` of generated source) as
    the rule is added, for URL building (``url_for``), which pocketserver never calls:
    for our ~230 routes that was about 0.2 s of every start, a fifth of a restart after
    a crash (issue #15). Building still works, compiled the first time it is asked.
    """

    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        compiled: list[Callable[..., tuple[str, str]]] = []

        def build(rule: Rule, *args: Any, **kwargs: Any) -> tuple[str, str]:
            if not compiled:
                builder = QuartRule._compile_builder(rule, append_unknown)
                compiled.append(builder.__get__(rule, None))
            return compiled[0](*args, **kwargs)

        return build
