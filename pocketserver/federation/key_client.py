"""A small signed HTTPS client for the keyring, until the federation client lands.

Interim: it finds a server the simple way only (an IP literal or host name with the
server name's port, 8448 by default: no ``.well-known`` or SRV lookup yet), connects
only to addresses ``ip_range_blacklist``/``ip_range_whitelist`` allow (through
:func:`pocketserver.net.transport.guarded_transport`), verifies TLS certificates
unless ``use_insecure_ssl_client_just_for_testing_do_not_use`` is set, signs every
request with ``X-Matrix`` and reads at most :data:`MAX_RESPONSE_BYTES`. It implements
:class:`pocketserver.federation.keyring.KeyFetchClient`; the full federation client
replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import nacl.signing

from pocketserver.core.identifiers import parse_server_name
from pocketserver.federation.xmatrix import authorization_header
from pocketserver.net.addresses import AddressPolicy

if TYPE_CHECKING:
    import httpx

DEFAULT_PORT = 8448
MAX_RESPONSE_BYTES = 256 * 1024
TIMEOUT_S = 10.0


class KeyRequestFailed(Exception):
    """The server answered with an error, too much, or not JSON."""


class SignedKeyClient:
    """``get_json``/``post_json`` to other servers, each request signed by us."""

    def __init__(
        self,
        server_name: str,
        signing_key: nacl.signing.SigningKey,
        policy: AddressPolicy,
        *,
        verify_tls: bool = True,
    ) -> None:
        self._server_name = server_name
        self._signing_key = signing_key
        self._policy = policy
        self._verify_tls = verify_tls

    async def get_json(self, destination: str, path: str) -> object:
        return await self._request("GET", destination, path, None)

    async def post_json(self, destination: str, path: str, body: Mapping[str, object]) -> object:
        return await self._request("POST", destination, path, body)

    def _client(self) -> httpx.AsyncClient:
        import httpx

        from pocketserver.net.transport import guarded_transport

        return httpx.AsyncClient(
            timeout=httpx.Timeout(TIMEOUT_S),
            follow_redirects=False,
            trust_env=False,
            transport=guarded_transport(
                self._policy, max_connections=1, verify_tls=self._verify_tls
            ),
        )

    async def _request(
        self, method: str, destination: str, path: str, body: Mapping[str, object] | None
    ) -> object:
        host, port = parse_server_name(destination)
        url = f"https://{host}:{port or DEFAULT_PORT}{path}"
        headers = {
            "Authorization": authorization_header(
                self._server_name, destination, self._signing_key, method, path, body
            )
        }
        content = None if body is None else json.dumps(body).encode("utf-8")
        if content is not None:
            headers["Content-Type"] = "application/json"
        async with (
            self._client() as client,
            client.stream(method, url, headers=headers, content=content) as response,
        ):
            if not 200 <= response.status_code < 300:
                raise KeyRequestFailed(f"{destination} answered {response.status_code}")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > MAX_RESPONSE_BYTES:
                    raise KeyRequestFailed(f"{destination} answered more than we read")
        try:
            return json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise KeyRequestFailed(f"{destination} did not answer JSON") from None
