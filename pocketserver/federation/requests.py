"""The JSON calls of the federation client (federation/client.py ``FederationClient``)
as a protocol, so that the modules that make them take the real client or a test's
fake without importing the HTTP stack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

Query = Mapping[str, str | Sequence[str]] | Sequence[tuple[str, str]]


class JsonRequests(Protocol):
    """``get_json`` / ``put_json`` / ``post_json`` of another server: the parsed JSON of a
    2xx answer; raise ``FederationError`` (``FederationHttpError`` with the remote's
    status and errcode) otherwise."""

    async def get_json(
        self,
        destination: str,
        path: str,
        *,
        query: Query | None = ...,
        timeout_s: float = ...,
        max_size: int = ...,
    ) -> Any: ...

    async def put_json(
        self,
        destination: str,
        path: str,
        content: object,
        *,
        query: Query | None = ...,
        timeout_s: float = ...,
        max_size: int = ...,
    ) -> Any: ...

    async def post_json(
        self,
        destination: str,
        path: str,
        content: object,
        *,
        query: Query | None = ...,
        timeout_s: float = ...,
        max_size: int = ...,
    ) -> Any: ...


class ByteStream(Protocol):
    """A streamed answer's body (``FederationResponse``)."""

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


class StreamingRequests(JsonRequests, Protocol):
    """:class:`JsonRequests` and ``stream``: a 2xx answer read as it arrives (an error
    status raises ``FederationHttpError`` on entry)."""

    def stream(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Query | None = ...,
        content: object | None = ...,
        timeout_s: float = ...,
        max_size: int = ...,
    ) -> AbstractAsyncContextManager[ByteStream]: ...
