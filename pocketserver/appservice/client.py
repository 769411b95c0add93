"""HTTP requests to application services (application service API): JSON in and out,
``Authorization: Bearer <hs_token>``, time limits and a bound on the answer's size.

The services' URLs are written by the server's admin in registration files, so the
``ip_range_blacklist`` that guards requests made on users' behalf (push gateways, URL
previews) does not apply here: bridges usually listen on loopback or the LAN. Synapse
does not apply it to application services either.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import trio

from pocketserver.appservice.registration import AppService

if TYPE_CHECKING:  # httpx is imported on first use: a server without bridges never loads it
    import httpx

TIMEOUT_S = 30.0
QUERY_TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 1_000_000
MAX_CONNECTIONS = 8


@dataclass(frozen=True, slots=True)
class Answer:
    """What a service answered: ``status`` 0 when it could not be reached."""

    status: int
    body: object = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def app_path(*parts: str) -> str:
    """``/_matrix/app/v1/...`` with each part percent-encoded."""
    return "/_matrix/app/v1/" + "/".join(quote(p, safe="") for p in parts)


class AppServiceClient:
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            # The system's CA store (honours SSL_CERT_FILE), not certifi's: a bridge on
            # the LAN often has a certificate from a local CA.
            context = ssl.create_default_context()
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(TIMEOUT_S),
                follow_redirects=False,
                trust_env=False,
                verify=context,
                limits=httpx.Limits(max_connections=MAX_CONNECTIONS),
                transport=self._transport,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def request(
        self,
        service: AppService,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: object = None,
        timeout_s: float = TIMEOUT_S,
    ) -> Answer:
        """Send one request to ``service`` and read its JSON answer (never raises for
        network trouble: status 0 then)."""
        import httpx

        if service.url is None:
            return Answer(0, detail="no url")
        headers = {"Authorization": f"Bearer {service.hs_token}"}
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            with trio.fail_after(timeout_s):
                async with self._http().stream(
                    method,
                    service.url + path,
                    params=list(params or ()),
                    content=content,
                    headers=headers,
                ) as r:
                    raw = bytearray()
                    async for chunk in r.aiter_bytes():
                        raw += chunk
                        if len(raw) > MAX_RESPONSE_BYTES:
                            return Answer(0, detail="answer too large")
                    status = r.status_code
        except (httpx.HTTPError, trio.TooSlowError, ssl.SSLError, OSError) as e:
            return Answer(0, detail=type(e).__name__)
        try:
            parsed = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            return Answer(status, detail="answer is not JSON")
        return Answer(status, parsed)
