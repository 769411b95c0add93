"""Fetching URLs for previews without letting the server reach its own network (SSRF).

Every host name is resolved here (through a :data:`Resolver` that tests replace),
EVERY address it resolves to is checked against ``url_preview_ip_range_blacklist``
(unless in ``url_preview_ip_range_whitelist``), and the connection then goes to the
address that was checked, so a second DNS answer cannot move it elsewhere (DNS
rebinding). TLS still verifies the certificate for the host name. Redirects are
followed here, hop by hop, each checked the same way; bodies are read up to a cap.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urljoin, urlparse

import httpcore
import httpx
import trio

from pocketserver.config.media import UrlPattern

T = TypeVar("T")
BodyHandler = Callable[[str, str, AsyncIterator[bytes]], Awaitable[T]]
"""``(final_url, content_type, chunks) -> result``."""

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> IP addresses``; the default asks the system resolver."""

MAX_REDIRECTS = 5
USER_AGENT = "pocketserver URL preview (Matrix homeserver)"


class FetchRefused(Exception):
    """The URL or one of its addresses is not allowed (blacklisted or not http/https)."""


class FetchFailed(Exception):
    """The remote end did not give a usable answer (unreachable, error status, too big)."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class AddressPolicy:
    """The blacklist and whitelist of IP ranges (``netaddr.IPSet``)."""

    def __init__(self, blacklist: Iterable[str], whitelist: Iterable[str]) -> None:
        import netaddr

        self._black = netaddr.IPSet(list(blacklist))
        self._white = netaddr.IPSet(list(whitelist))

    def allowed(self, address: str) -> bool:
        import netaddr

        try:
            ip = netaddr.IPAddress(address.split("%", 1)[0])
        except (netaddr.AddrFormatError, ValueError, TypeError):
            return False  # not an address we understand: never connect to it
        if ip.version == 6 and ip.is_ipv4_mapped():
            ip = ip.ipv4()
        if ip in self._white:
            return True
        return ip not in self._black


def url_blacklisted(url: str, patterns: Iterable[UrlPattern]) -> bool:
    """Synapse's ``url_preview_url_blacklist``: an entry matches when all its components do."""
    parts = urlparse(url)
    for entry in patterns:
        if all(_component_matches(parts, name, pattern) for name, pattern in entry.components):
            return True
    return False


def _component_matches(parts: Any, name: str, pattern: str) -> bool:
    value = getattr(parts, name, None)
    value = "" if value is None else str(value)
    if pattern.startswith("^"):
        return re.match(pattern, value) is not None
    return fnmatch.fnmatch(value, pattern)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to one checked address whatever host name the URL has."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(
            self._address, port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for previews")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._inner:
            yield part

    async def aclose(self) -> None:
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()


class _PinnedTransport(httpx.AsyncBaseTransport):
    def __init__(self, address: str) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=1,
            network_backend=_PinnedBackend(address),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        req = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        resp = await self._pool.handle_async_request(req)
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_ResponseStream(resp.stream),
            extensions=resp.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class SafeFetcher:
    """GETs a URL for a preview, with every address checked and the body capped."""

    def __init__(
        self,
        policy: AddressPolicy,
        url_blacklist: tuple[UrlPattern, ...],
        *,
        resolver: Resolver = system_resolver,
        timeout_s: float = 10.0,
    ) -> None:
        self.policy = policy
        self.url_blacklist = url_blacklist
        self.resolver = resolver
        self.timeout_s = timeout_s

    async def check_url(self, url: str) -> tuple[str, str, int]:
        """Refuse a URL that is blacklisted, not http(s), or resolves to a blocked address.

        Returns:
            ``(host, address to connect to, port)``.
        """
        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchRefused("only http and https URLs can be previewed")
        if url_blacklisted(url, self.url_blacklist):
            raise FetchRefused("this URL is blacklisted")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise FetchRefused("the URL has an invalid port") from None
        host = parts.hostname
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = await self.resolver(host, port)
            except OSError as e:
                raise FetchFailed(f"cannot resolve {host}: {e}") from None
        if not addresses:
            raise FetchFailed(f"{host} has no address")
        for address in addresses:
            if not self.policy.allowed(address):
                raise FetchRefused("the URL's host resolves to an address that is not allowed")
        return host, addresses[0], port

    async def fetch(self, url: str, handler: BodyHandler[T]) -> T:
        """GET ``url`` following up to :data:`MAX_REDIRECTS` redirects, each hop checked.

        ``handler(final_url, content_type, chunks)`` reads as much of the body as it
        wants (it enforces its own size cap) and its result is returned.

        Raises:
            FetchRefused: a hop is not allowed.
            FetchFailed: no usable answer, or the time limit passed.
        """
        with trio.move_on_after(self.timeout_s):
            return await self._fetch(url, handler)
        raise FetchFailed("timed out")

    async def _fetch(self, url: str, handler: BodyHandler[T]) -> T:
        for _ in range(MAX_REDIRECTS + 1):
            _host, address, _port = await self.check_url(url)
            transport = _PinnedTransport(address)
            try:
                async with httpx.AsyncClient(
                    transport=transport,
                    follow_redirects=False,
                    timeout=self.timeout_s,
                    trust_env=False,
                ) as client:
                    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
                    async with client.stream("GET", url, headers=headers) as resp:
                        if resp.status_code in (301, 302, 303, 307, 308):
                            location = resp.headers.get("Location")
                            if not location:
                                raise FetchFailed("redirect without a Location")
                            url = urljoin(url, location)
                            continue
                        if resp.status_code != 200:
                            raise FetchFailed(f"the page answered HTTP {resp.status_code}")
                        ctype = resp.headers.get("Content-Type", "application/octet-stream")
                        return await handler(url, ctype, resp.aiter_raw())
            except _NETWORK_ERRORS as e:
                raise FetchFailed(f"cannot fetch the page: {e}") from None
        raise FetchFailed("too many redirects")


_NETWORK_ERRORS = (
    httpx.HTTPError,
    httpcore.ConnectError,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    OSError,
)


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The first ``limit`` bytes of a body (the rest is not read)."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) >= limit:
            break
    return bytes(buf[:limit])
