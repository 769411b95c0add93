"""The JSON calls of the federation client (federation/client.py ``FederationClient``)
as a protocol, so that the modules that make them take the real client or a test's
fake without importing the HTTP stack."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
