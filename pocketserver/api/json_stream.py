"""JSON answers written as they are read: for a room's state over federation (``/state``,
``send_join``), which can be tens of thousands of events and must never be held whole.

:func:`stream_object` encodes an object whose values are plain JSON or async iterators
of JSON values (encoded as arrays), a chunk of about :data:`CHUNK_BYTES` at a time, and
:func:`streamed_json` wraps that in a Quart response. The route does its checks (and
raises its Matrix errors) before the response starts; an error while streaming can
only cut the answer short, which the peer sees as a broken response and retries.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass

from quart import Response

CHUNK_BYTES = 64 * 1024
"""Bytes gathered before a chunk is handed to the connection."""

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dump(value: object) -> str:
    return _encoder.encode(value)


@dataclass(frozen=True, slots=True)
class StreamedMembers:
    """A value of :func:`stream_object` encoded as a JSON *object*, written a member at
    a time from ``(key, value)`` pairs (e.g. ``/joined_members``' ``joined``)."""

    items: AsyncIterable[tuple[str, object]]


async def stream_object(fields: Mapping[str, object]) -> AsyncIterator[bytes]:
    """Encode ``fields`` as one JSON object; values that are async iterables become
    arrays written item by item."""
    parts: list[bytes] = [b"{"]
    size = 1
    first_field = True
    for key, value in fields.items():
        head = ("" if first_field else ",") + _dump(key) + ":"
        first_field = False
        if isinstance(value, StreamedMembers):
            parts.append((head + "{").encode())
            first_item = True
            async for name, item in value.items:
                data = (("" if first_item else ",") + _dump(name) + ":" + _dump(item)).encode()
                first_item = False
                parts.append(data)
                size += len(data)
                if size >= CHUNK_BYTES:
                    yield b"".join(parts)
                    parts, size = [], 0
            parts.append(b"}")
        elif not isinstance(value, AsyncIterable):
            parts.append((head + _dump(value)).encode())
            size += len(parts[-1])
        else:
            parts.append((head + "[").encode())
            first_item = True
            async for item in value:
                data = (("" if first_item else ",") + _dump(item)).encode()
                first_item = False
                parts.append(data)
                size += len(data)
                if size >= CHUNK_BYTES:
                    yield b"".join(parts)
                    parts, size = [], 0
            parts.append(b"]")
        if size >= CHUNK_BYTES:
            yield b"".join(parts)
            parts, size = [], 0
    parts.append(b"}")
    yield b"".join(parts)


async def _in_status_pair(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield b"[200,"
    async for chunk in body:
        yield chunk
    yield b"]"


def streamed_json(
    fields: Mapping[str, object], status: int = 200, *, status_pair: bool = False
) -> Response:
    """A Quart response streaming :func:`stream_object` of ``fields``; with
    ``status_pair`` wrapped as ``[200, {...}]`` (the old v1 federation answers)."""
    body = stream_object(fields)
    if status_pair:
        body = _in_status_pair(body)
    return Response(body, status=status, content_type="application/json")
