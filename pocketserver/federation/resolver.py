"""Server discovery: which host, port, ``Host`` header and TLS name reach a server name.

server-server-api.md "Resolving server names" (v1.19), steps in the spec's order:

1. IP literal: that address, the given port or 8448; certificate for the IP.
2. Host name with an explicit port: the name's A/AAAA records, that port.
3. ``https://<hostname>/.well-known/matrix/server`` names ``<delegated>[:<port>]``:
   3.1 an IP literal; 3.2 a name with a port; 3.3 SRV ``_matrix-fed._tcp.<delegated>``;
   3.4 (deprecated) SRV ``_matrix._tcp.<delegated>``; 3.5 ``<delegated>:8448``.
4. No (valid) well-known: SRV ``_matrix-fed._tcp.<hostname>``;
5. (deprecated) SRV ``_matrix._tcp.<hostname>``;
6. ``<hostname>:8448``.

The answer (:class:`ResolvedServer`) names the targets as host names (or IP literals)
and ports; the addresses themselves are looked up and checked against
``ip_range_blacklist`` by the transport at connect time, so that the address checked
is the address connected to (see :mod:`pocketserver.net.addresses`).

The well-known answer is cached as Synapse does (synapse/http/federation/
well_known_resolver.py, read, not copied): the response's ``Cache-Control: max-age``
or ``Expires``, else 24 hours, kept between 5 minutes and 48 hours; an invalid
answer (not 200, not JSON, no valid ``m.server``) means "no delegation" for an hour;
an unreachable well-known means "no delegation" for an hour too, or only 2 minutes
if the host had a valid one lately (a still-fresh earlier answer is kept meanwhile).
The caches are bounded by entry count (entries are ~100 bytes). SRV answers are
cached by dnspython's LRU cache, which honours the records' TTLs.

This module does no HTTP itself: the well-known fetch is injected (the federation
client's :func:`pocketserver.federation.client.FederationClient` provides the real
one), and so is the SRV lookup (:func:`dns_srv_lookup` by default), which is what
the table tests replace.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pocketserver.core.identifiers import parse_server_name
from pocketserver.net.addresses import literal_address

log = logging.getLogger(__name__)

FEDERATION_PORT = 8448
"""The port used when neither the server name, the well-known nor SRV give one."""

WELL_KNOWN_DEFAULT_CACHE_S = 24 * 3600
WELL_KNOWN_MIN_CACHE_S = 5 * 60
WELL_KNOWN_MAX_CACHE_S = 48 * 3600
WELL_KNOWN_INVALID_CACHE_S = 3600
"""How long a failed or invalid well-known means "no delegation"."""
WELL_KNOWN_DOWN_CACHE_S = 2 * 60
"""The same, for a host that served a valid well-known lately: ask again soon."""
WELL_KNOWN_REMEMBER_VALID_S = 2 * 3600
WELL_KNOWN_REFRESH_FACTOR = 0.2
"""An answer in the last fifth of its cache time is fetched again (and kept if that fails)."""
WELL_KNOWN_MAX_SIZE = 50 * 1024
WELL_KNOWN_CACHE_ENTRIES = 1024
"""At most this many hosts' well-known answers are remembered (least recently used go)."""


class DiscoveryError(Exception):
    """The server name cannot be resolved to anything to connect to."""


@dataclass(frozen=True, slots=True)
class Target:
    """One place to connect to: a DNS name (resolved at connect time) or an IP literal
    (normalised, without brackets), and a port."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ResolvedServer:
    """Where requests to ``server_name`` go.

    Attributes:
        server_name: The server name that was resolved.
        targets: Where to connect, in the order to try (several only from SRV).
        host_header: The ``Host`` header of every request.
        tls_name: The name (or IP address) the server's certificate must be valid for;
            also the SNI name when it is a DNS name.
        step: Which step of the spec's list gave the answer (for logs and tests):
            ``ip-literal``, ``explicit-port``, ``well-known-ip``, ``well-known-port``,
            ``well-known-srv``, ``well-known-legacy-srv``, ``well-known-default``,
            ``srv``, ``legacy-srv`` or ``default``.
    """

    server_name: str
    targets: tuple[Target, ...]
    host_header: str
    tls_name: str
    step: str


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


SrvLookup = Callable[[str], Awaitable[list[SrvRecord]]]
"""``(_service._tcp.name) -> records``: ``[]`` when there is none (NXDOMAIN, no
answer); raises :class:`DiscoveryError` when DNS fails otherwise."""


@dataclass(frozen=True, slots=True)
class WellKnownResponse:
    """What ``GET https://<host>/.well-known/matrix/server`` answered (after redirects)."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    """Lower-case header names."""


class WellKnownUnavailable(Exception):
    """The well-known could not be fetched (unreachable, TLS, 5xx, too large): a
    temporary failure, unlike a 404 or a bad body, which are answers."""


WellKnownFetch = Callable[[str], Awaitable[WellKnownResponse]]
"""``(hostname) -> response``; raises :class:`WellKnownUnavailable`."""


async def dns_srv_lookup(name: str) -> list[SrvRecord]:
    """The SRV records of ``name`` from DNS (dnspython, with a bounded TTL cache)."""
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    resolver = _dns_resolver()
    try:
        answer = await resolver.resolve(name, "SRV")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.DNSException, OSError) as e:
        raise DiscoveryError(f"SRV lookup of {name} failed: {e}") from None
    return [
        SrvRecord(
            priority=int(r.priority),
            weight=int(r.weight),
            port=int(r.port),
            target=r.target.to_text(omit_final_dot=True),
        )
        for r in answer
    ]


_RESOLVER: Any = None


def _dns_resolver() -> Any:
    """One dnspython resolver for the process, with an LRU cache of bounded size."""
    global _RESOLVER
    if _RESOLVER is None:
        import dns.asyncresolver
        import dns.resolver

        resolver = dns.asyncresolver.Resolver()
        resolver.cache = dns.resolver.LRUCache(max_size=1024)
        resolver.lifetime = 10.0
        _RESOLVER = resolver
    return _RESOLVER


def order_srv(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 order: lowest priority first; within a priority, a weighted random order.

    Raises:
        DiscoveryError: the only record's target is ``.`` ("decidedly not available").
    """
    if len(records) == 1 and records[0].target in ("", "."):
        raise DiscoveryError("the SRV record says the service is not available")
    records = [r for r in records if r.target not in ("", ".")]
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                pick = group[0]
            else:
                point = rng.uniform(0, total)
                running = 0
                pick = group[-1]
                for r in group:
                    running += r.weight
                    if running >= point:
                        pick = r
                        break
            ordered.append(pick)
            group.remove(pick)
    return ordered


def cache_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """The cache time a response asks for (``Cache-Control`` then ``Expires``), or None.

    ``no-store`` and an unparseable ``Expires`` mean 0 (already expired, RFC 9111).
    """
    directives: dict[str, str | None] = {}
    for part in headers.get("cache-control", "").split(","):
        name, sep, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip() if sep else None
    if "no-store" in directives:
        return 0.0
    max_age = directives.get("max-age")
    if max_age:
        try:
            return float(int(max_age))
        except ValueError:
            pass
    expires = headers.get("expires")
    if expires is not None:
        try:
            return email.utils.parsedate_to_datetime(expires).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return 0.0
    return None


def parse_well_known(response: WellKnownResponse) -> str | None:
    """The delegated server name a well-known response gives, or None if it is invalid
    (not 200, not a JSON object, ``m.server`` missing or not a valid server name)."""
    if response.status != 200:
        return None
    try:
        body = json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    delegated = body.get("m.server")
    if not isinstance(delegated, str):
        return None
    try:
        parse_server_name(delegated)
    except ValueError:
        return None
    return delegated


@dataclass(slots=True)
class _Cached:
    delegated: str | None
    expires: float
    ttl: float


class WellKnownCache:
    """Looks up and caches ``/.well-known/matrix/server`` per host name."""

    def __init__(
        self,
        fetch: WellKnownFetch,
        *,
        clock: Callable[[], float] = time.time,
        max_entries: int = WELL_KNOWN_CACHE_ENTRIES,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._max = max_entries
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._had_valid: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    async def delegated_server(self, hostname: str) -> str | None:
        """The server name ``hostname`` delegates to, or None (no valid well-known)."""
        now = self._clock()
        cached = self._cache.get(hostname)
        if cached is not None:
            self._cache.move_to_end(hostname)
            # A delegation is fetched again early (and kept if that fails); an error
            # or "no delegation" only once it expires.
            early = WELL_KNOWN_REFRESH_FACTOR * cached.ttl if cached.delegated else 0.0
            if now < cached.expires - early:
                return cached.delegated
            if now >= cached.expires:
                cached = None
        try:
            response = await self._fetch(hostname)
        except WellKnownUnavailable as e:
            if cached is not None and cached.delegated is not None:
                return cached.delegated  # still valid: keep it until it expires
            log.info("no well-known for %s: %s", hostname, e)
            down = self._had_valid.get(hostname, 0.0) > now
            self._store(
                hostname,
                None,
                WELL_KNOWN_DOWN_CACHE_S if down else WELL_KNOWN_INVALID_CACHE_S,
                now,
            )
            return None
        delegated = parse_well_known(response)
        if delegated is None:
            log.info("invalid well-known for %s (HTTP %d)", hostname, response.status)
            self._store(hostname, None, WELL_KNOWN_INVALID_CACHE_S, now)
            return None
        period = cache_seconds(response.headers, now)
        if period is None:
            period = WELL_KNOWN_DEFAULT_CACHE_S
        period = min(max(period, WELL_KNOWN_MIN_CACHE_S), WELL_KNOWN_MAX_CACHE_S)
        self._store(hostname, delegated, period, now)
        self._had_valid[hostname] = now + period + WELL_KNOWN_REMEMBER_VALID_S
        self._had_valid.move_to_end(hostname)
        while len(self._had_valid) > self._max:
            self._had_valid.popitem(last=False)
        return delegated

    def _store(self, hostname: str, delegated: str | None, ttl: float, now: float) -> None:
        self._cache[hostname] = _Cached(delegated, now + ttl, ttl)
        self._cache.move_to_end(hostname)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ServerResolver:
    """Resolves server names in the spec's order (see the module docstring)."""

    def __init__(
        self,
        well_known: WellKnownCache,
        srv_lookup: SrvLookup = dns_srv_lookup,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.well_known = well_known
        self._srv_lookup = srv_lookup
        self._rng = rng or random.Random()

    async def resolve(self, server_name: str) -> ResolvedServer:
        """Where to send requests for ``server_name``.

        Raises:
            DiscoveryError: the server name is invalid, or DNS failed (other than
                "no such record"), or SRV says the service is unavailable.
        """
        try:
            host, port = parse_server_name(server_name)
        except ValueError as e:
            raise DiscoveryError(str(e)) from None
        literal = literal_address(host)
        if literal is not None:  # step 1
            return ResolvedServer(
                server_name,
                (Target(literal, port or FEDERATION_PORT),),
                server_name,
                literal,
                "ip-literal",
            )
        host = host.lower()
        if port is not None:  # step 2
            return ResolvedServer(
                server_name, (Target(host, port),), server_name, host, "explicit-port"
            )
        delegated = await self.well_known.delegated_server(host)  # step 3
        if delegated is not None:
            return await self._delegated(server_name, delegated)
        return await self._by_srv(server_name, host, "")  # steps 4-6

    async def _delegated(self, server_name: str, delegated: str) -> ResolvedServer:
        d_host, d_port = parse_server_name(delegated)  # checked by parse_well_known
        literal = literal_address(d_host)
        if literal is not None:  # 3.1
            return ResolvedServer(
                server_name,
                (Target(literal, d_port or FEDERATION_PORT),),
                delegated,
                literal,
                "well-known-ip",
            )
        d_host = d_host.lower()
        if d_port is not None:  # 3.2
            return ResolvedServer(
                server_name,
                (Target(d_host, d_port),),
                f"{d_host}:{d_port}",
                d_host,
                "well-known-port",
            )
        return await self._by_srv(server_name, d_host, "well-known-")  # 3.3-3.5

    async def _by_srv(self, server_name: str, host: str, prefix: str) -> ResolvedServer:
        """SRV ``_matrix-fed._tcp``, then the deprecated ``_matrix._tcp``, then 8448;
        always with ``host`` as the Host header and the certificate's name."""
        for service, step in (("_matrix-fed._tcp", "srv"), ("_matrix._tcp", "legacy-srv")):
            records = await self._srv_lookup(f"{service}.{host}")
            if records:
                ordered = order_srv(records, self._rng)
                targets = tuple(Target(r.target.rstrip(".").lower(), r.port) for r in ordered)
                return ResolvedServer(server_name, targets, host, host, prefix + step)
        return ResolvedServer(
            server_name,
            (Target(host, FEDERATION_PORT),),
            host,
            host,
            prefix + "default",
        )
