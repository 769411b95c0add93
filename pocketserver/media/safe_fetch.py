"""Fetching URLs for previews without letting the server reach its own network (SSRF).

Every host name is resolved here (through a :data:`Resolver` that tests replace),
EVERY address it resolves to is checked against ``url_preview_ip_range_blacklist``
(unless in ``url_preview_ip_range_whitelist``), and the connection then goes to the
address that was checked, so a second DNS answer cannot move it elsewhere (DNS
rebinding). TLS still verifies the certificate for the host name. Redirects are
followed here, hop by hop, each checked the same way; bodies are read up to a cap.
The address checks and the pinned connection are shared with push delivery
(:mod:`pocketserver.net`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urljoin, urlparse

import httpcore
import httpx
import trio

from pocketserver.config.media import UrlPattern
from pocketserver.net.addresses import (
    AddressBlocked,
    AddressPolicy,
    HostUnresolvable,
    Resolver,
    resolve_checked,
    system_resolver,
)
from pocketserver.net.transport import pinned_transport

__all__ = [
    "AddressPolicy",
    "FetchFailed",
    "FetchRefused",
    "Resolver",
    "SafeFetcher",
    "read_capped",
    "system_resolver",
    "url_blacklisted",
]

T = TypeVar("T")
BodyHandler = Callable[[str, str, AsyncIterator[bytes]], Awaitable[T]]
"""``(final_url, content_type, chunks) -> result``."""

MAX_REDIRECTS = 5
USER_AGENT = "pocketserver URL preview (Matrix homeserver)"


class FetchRefused(Exception):
    """The URL or one of its addresses is not allowed (blacklisted or not http/https)."""


class FetchFailed(Exception):
    """The remote end did not give a usable answer (unreachable, error status, too big)."""


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
            addresses = await resolve_checked(host, port, self.policy, self.resolver)
        except HostUnresolvable as e:
            raise FetchFailed(str(e)) from None
        except AddressBlocked:
            raise FetchRefused(
                "the URL's host resolves to an address that is not allowed"
            ) from None
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
            transport = pinned_transport(address)
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
