"""The server's one federation client, built when first used.

Every request to another homeserver (signing keys, joins, transactions, queries) goes
through one :class:`~pocketserver.federation.client.FederationClient`: one connection
pool under one cap, one discovery cache. It is built on first use, so a server that
never talks to another one never imports httpx (tests/test_memory.py keeps it out).
Requests are signed with ``X-Matrix`` by this server's key (xmatrix.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import nacl.signing

from pocketserver.config.model import Config
from pocketserver.federation.xmatrix import authorization_header

if TYPE_CHECKING:
    from pocketserver.federation.client import FederationClient, FederationResponse


class LazyFederationClient:
    """A :class:`FederationClient` made from the config on the first request; the same
    request methods (see that class), and :meth:`aclose` at shutdown."""

    def __init__(self, config: Config, signing_key: nacl.signing.SigningKey) -> None:
        self._config = config
        self._signing_key = signing_key
        self._client: FederationClient | None = None

    def _sign(self, method: str, destination: str, uri: str, content: object | None) -> str:
        return authorization_header(
            self._config.server_name, destination, self._signing_key, method, uri, content
        )

    @property
    def client(self) -> FederationClient:
        if self._client is None:
            from pocketserver.federation.client import FederationClient

            self._client = FederationClient.from_config(self._config, self._sign)
        return self._client

    @property
    def started(self) -> bool:
        return self._client is not None

    async def get_json(self, destination: str, path: str, **kwargs: Any) -> Any:
        return await self.client.get_json(destination, path, **kwargs)

    async def put_json(self, destination: str, path: str, content: object, **kwargs: Any) -> Any:
        return await self.client.put_json(destination, path, content, **kwargs)

    async def post_json(self, destination: str, path: str, content: object, **kwargs: Any) -> Any:
        return await self.client.post_json(destination, path, content, **kwargs)

    @asynccontextmanager
    async def stream(
        self, method: str, destination: str, path: str, **kwargs: Any
    ) -> AsyncIterator[FederationResponse]:
        async with self.client.stream(method, destination, path, **kwargs) as response:
            yield response

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
