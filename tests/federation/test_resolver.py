"""Server discovery, step by step as server-server-api.md "Resolving server names" lists
them, with a fake DNS (SRV) and a fake well-known fetcher."""

from __future__ import annotations

import json
import random

import pytest

from pocketserver.federation.resolver import (
    DiscoveryError,
    ServerResolver,
    SrvRecord,
    Target,
    WellKnownCache,
    WellKnownResponse,
    WellKnownUnavailable,
    cache_seconds,
    order_srv,
)


class FakeDns:
    def __init__(self, srv: dict[str, list[SrvRecord]] | None = None) -> None:
        self.srv = srv or {}
        self.asked: list[str] = []

    async def __call__(self, name: str) -> list[SrvRecord]:
        self.asked.append(name)
        return list(self.srv.get(name, []))


class FakeWellKnown:
    """Answers per host: a WellKnownResponse, an exception, or nothing (404)."""

    def __init__(self, answers: dict[str, object] | None = None) -> None:
        self.answers = answers or {}
        self.fetched: list[str] = []

    async def __call__(self, host: str) -> WellKnownResponse:
        self.fetched.append(host)
        answer = self.answers.get(host)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, WellKnownResponse):
            return answer
        if answer is None:
            return WellKnownResponse(404, b"", {})
        return WellKnownResponse(200, json.dumps(answer).encode(), {})


def ok(server: str, **headers: str) -> WellKnownResponse:
    return WellKnownResponse(200, json.dumps({"m.server": server}).encode(), headers)


def srv(target: str, port: int, priority: int = 10, weight: int = 0) -> SrvRecord:
    return SrvRecord(priority, weight, port, target)


# (case, server name, well-known answers, SRV records,
#  expected targets, Host header, TLS name, step, SRV names asked, well-known fetched)
CASES = [
    (
        "1 IPv4 literal, no port: 8448, no lookups",
        "1.2.3.4",
        {"1.2.3.4": {"m.server": "evil.example:1"}},
        {},
        [("1.2.3.4", 8448)],
        "1.2.3.4",
        "1.2.3.4",
        "ip-literal",
        [],
        [],
    ),
    (
        "1 IPv6 literal with port: Host keeps the brackets and port",
        "[2001:db8::1]:8449",
        {},
        {},
        [("2001:db8::1", 8449)],
        "[2001:db8::1]:8449",
        "2001:db8::1",
        "ip-literal",
        [],
        [],
    ),
    (
        "2 name with explicit port: A/AAAA of the name, no well-known, no SRV",
        "example.org:8449",
        {"example.org": {"m.server": "other.example:1"}},
        {"_matrix-fed._tcp.example.org": [srv("srv.example", 1)]},
        [("example.org", 8449)],
        "example.org:8449",
        "example.org",
        "explicit-port",
        [],
        [],
    ),
    (
        "3.1 well-known delegates to an IP literal with port",
        "example.org",
        {"example.org": {"m.server": "5.6.7.8:9000"}},
        {"_matrix-fed._tcp.example.org": [srv("srv.example", 1)]},
        [("5.6.7.8", 9000)],
        "5.6.7.8:9000",
        "5.6.7.8",
        "well-known-ip",
        [],
        ["example.org"],
    ),
    (
        "3.1 well-known delegates to an IPv6 literal without port: 8448",
        "example.org",
        {"example.org": {"m.server": "[2001:db8::2]"}},
        {},
        [("2001:db8::2", 8448)],
        "[2001:db8::2]",
        "2001:db8::2",
        "well-known-ip",
        [],
        ["example.org"],
    ),
    (
        "3.2 well-known delegates to a name with port: no SRV",
        "example.org",
        {"example.org": {"m.server": "matrix.example.org:443"}},
        {"_matrix-fed._tcp.matrix.example.org": [srv("srv.example", 1)]},
        [("matrix.example.org", 443)],
        "matrix.example.org:443",
        "matrix.example.org",
        "well-known-port",
        [],
        ["example.org"],
    ),
    (
        "3.3 delegated name without port: SRV _matrix-fed._tcp.<delegated>",
        "example.org",
        {"example.org": {"m.server": "matrix.example.org"}},
        {
            "_matrix-fed._tcp.matrix.example.org": [srv("host1.example.net.", 8450)],
            "_matrix._tcp.matrix.example.org": [srv("legacy.example.net", 1)],
            "_matrix-fed._tcp.example.org": [srv("wrong.example", 1)],
        },
        [("host1.example.net", 8450)],
        "matrix.example.org",
        "matrix.example.org",
        "well-known-srv",
        ["_matrix-fed._tcp.matrix.example.org"],
        ["example.org"],
    ),
    (
        "3.4 delegated name, no _matrix-fed: deprecated _matrix._tcp.<delegated>",
        "example.org",
        {"example.org": {"m.server": "matrix.example.org"}},
        {"_matrix._tcp.matrix.example.org": [srv("legacy.example.net", 8451)]},
        [("legacy.example.net", 8451)],
        "matrix.example.org",
        "matrix.example.org",
        "well-known-legacy-srv",
        ["_matrix-fed._tcp.matrix.example.org", "_matrix._tcp.matrix.example.org"],
        ["example.org"],
    ),
    (
        "3.5 delegated name, no SRV at all: <delegated>:8448",
        "example.org",
        {"example.org": {"m.server": "matrix.example.org"}},
        {"_matrix-fed._tcp.example.org": [srv("wrong.example", 1)]},
        [("matrix.example.org", 8448)],
        "matrix.example.org",
        "matrix.example.org",
        "well-known-default",
        ["_matrix-fed._tcp.matrix.example.org", "_matrix._tcp.matrix.example.org"],
        ["example.org"],
    ),
    (
        "4 no well-known (404): SRV _matrix-fed._tcp.<hostname>, Host is the hostname",
        "example.org",
        {},
        {"_matrix-fed._tcp.example.org": [srv("fed.example.net", 443)]},
        [("fed.example.net", 443)],
        "example.org",
        "example.org",
        "srv",
        ["_matrix-fed._tcp.example.org"],
        ["example.org"],
    ),
    (
        "5 no well-known, no _matrix-fed: deprecated _matrix._tcp.<hostname>",
        "example.org",
        {},
        {"_matrix._tcp.example.org": [srv("old.example.net", 8000)]},
        [("old.example.net", 8000)],
        "example.org",
        "example.org",
        "legacy-srv",
        ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"],
        ["example.org"],
    ),
    (
        "6 nothing at all: <hostname>:8448",
        "example.org",
        {},
        {},
        [("example.org", 8448)],
        "example.org",
        "example.org",
        "default",
        ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"],
        ["example.org"],
    ),
    (
        "3 invalid well-known (bad JSON) = no delegation: step 4",
        "example.org",
        {"example.org": WellKnownResponse(200, b"{not json", {})},
        {"_matrix-fed._tcp.example.org": [srv("fed.example.net", 443)]},
        [("fed.example.net", 443)],
        "example.org",
        "example.org",
        "srv",
        ["_matrix-fed._tcp.example.org"],
        ["example.org"],
    ),
    (
        "3 m.server missing = no delegation",
        "example.org",
        {"example.org": {"server": "x.example"}},
        {},
        [("example.org", 8448)],
        "example.org",
        "example.org",
        "default",
        ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"],
        ["example.org"],
    ),
    (
        "3 m.server not a server name = no delegation",
        "example.org",
        {"example.org": {"m.server": "bad name:x"}},
        {},
        [("example.org", 8448)],
        "example.org",
        "example.org",
        "default",
        ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"],
        ["example.org"],
    ),
    (
        "3 non-200 with a valid body = no delegation",
        "example.org",
        {"example.org": WellKnownResponse(500, b'{"m.server": "x.example"}', {})},
        {},
        [("example.org", 8448)],
        "example.org",
        "example.org",
        "default",
        ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"],
        ["example.org"],
    ),
    (
        "3 unreachable well-known = no delegation",
        "example.org",
        {"example.org": WellKnownUnavailable("connection refused")},
        {},
        [("example.org", 8448)],
        "example.org",
        "example.org",
        "default",
        ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"],
        ["example.org"],
    ),
]


@pytest.mark.parametrize(
    ("server_name", "answers", "records", "targets", "host", "tls", "step", "asked", "fetched"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_resolution_step(
    server_name: str,
    answers: dict[str, object],
    records: dict[str, list[SrvRecord]],
    targets: list[tuple[str, int]],
    host: str,
    tls: str,
    step: str,
    asked: list[str],
    fetched: list[str],
) -> None:
    dns = FakeDns(records)
    well_known = FakeWellKnown(answers)
    resolver = ServerResolver(WellKnownCache(well_known), dns)
    resolved = await resolver.resolve(server_name)
    assert resolved.targets == tuple(Target(h, p) for h, p in targets)
    assert resolved.host_header == host
    assert resolved.tls_name == tls
    assert resolved.step == step
    assert dns.asked == asked
    assert well_known.fetched == fetched


@pytest.mark.parametrize("name", ["", "bad name", "example.org:99999", "[::1", "a_b.example"])
async def test_an_invalid_server_name_is_refused_without_lookups(name: str) -> None:
    dns, well_known = FakeDns(), FakeWellKnown()
    resolver = ServerResolver(WellKnownCache(well_known), dns)
    with pytest.raises(DiscoveryError):
        await resolver.resolve(name)
    assert dns.asked == []
    assert well_known.fetched == []


async def test_srv_dot_target_means_the_service_is_unavailable() -> None:
    dns = FakeDns({"_matrix-fed._tcp.example.org": [srv(".", 0)]})
    resolver = ServerResolver(WellKnownCache(FakeWellKnown()), dns)
    with pytest.raises(DiscoveryError, match="not available"):
        await resolver.resolve("example.org")


def test_srv_order_priority_first_then_weighted() -> None:
    records = [srv("c", 1, priority=20), srv("a", 1, priority=10, weight=0), srv("b", 1, 10, 0)]
    assert [r.target for r in order_srv(records, random.Random(1))][2] == "c"
    # Weighted: a weight-100 record comes first far more often than a weight-1 one.
    heavy_first = sum(
        order_srv([srv("light", 1, 10, 1), srv("heavy", 1, 10, 100)], random.Random(seed))[0].target
        == "heavy"
        for seed in range(200)
    )
    assert heavy_first > 180


async def test_srv_targets_all_kept_in_order() -> None:
    dns = FakeDns(
        {
            "_matrix-fed._tcp.example.org": [
                srv("second.example", 8449, priority=20),
                srv("first.example", 8448, priority=10),
            ]
        }
    )
    resolved = await ServerResolver(WellKnownCache(FakeWellKnown()), dns).resolve("example.org")
    assert resolved.targets == (Target("first.example", 8448), Target("second.example", 8449))


# --- caching of the well-known ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_well_known_is_cached_24h_by_default_then_fetched_again() -> None:
    clock, fetch = Clock(), FakeWellKnown({"example.org": {"m.server": "m.example.org"}})
    cache = WellKnownCache(fetch, clock=clock)
    assert await cache.delegated_server("example.org") == "m.example.org"
    clock.now += 0.79 * 24 * 3600  # before the refresh window (last fifth)
    assert await cache.delegated_server("example.org") == "m.example.org"
    assert fetch.fetched == ["example.org"]
    clock.now += 0.02 * 24 * 3600
    fetch.answers["example.org"] = {"m.server": "new.example.org"}
    assert await cache.delegated_server("example.org") == "new.example.org"
    assert len(fetch.fetched) == 2


@pytest.mark.parametrize(
    ("headers", "expected_s"),
    [
        ({"cache-control": "max-age=600"}, 600),
        ({"cache-control": "public, max-age=1"}, 300),  # at least 5 minutes
        ({"cache-control": "max-age=999999999"}, 48 * 3600),  # at most 48 hours
        ({"cache-control": "no-store"}, 300),
        ({"expires": "Thu, 01 Jan 1970 00:00:00 GMT"}, 300),
        ({"expires": "0"}, 300),
        ({}, 24 * 3600),
    ],
)
async def test_well_known_cache_time_follows_the_headers(
    headers: dict[str, str], expected_s: float
) -> None:
    clock = Clock()
    fetch = FakeWellKnown({"example.org": ok("m.example.org", **headers)})
    cache = WellKnownCache(fetch, clock=clock)
    await cache.delegated_server("example.org")
    # Still cached just before the refresh window, fetched again after the expiry.
    clock.now += expected_s * 0.79
    await cache.delegated_server("example.org")
    assert len(fetch.fetched) == 1
    clock.now += expected_s * 0.22
    await cache.delegated_server("example.org")
    assert len(fetch.fetched) == 2


def test_expires_header_in_the_future() -> None:
    now = 1_700_000_000.0
    import email.utils

    header = email.utils.formatdate(now + 3600, usegmt=True)
    assert cache_seconds({"expires": header}, now) == pytest.approx(3600)


async def test_errors_are_cached_for_an_hour() -> None:
    clock = Clock()
    fetch = FakeWellKnown({"example.org": WellKnownUnavailable("refused")})
    cache = WellKnownCache(fetch, clock=clock)
    assert await cache.delegated_server("example.org") is None
    clock.now += 3500
    assert await cache.delegated_server("example.org") is None
    assert len(fetch.fetched) == 1
    clock.now += 200
    fetch.answers["example.org"] = {"m.server": "m.example.org"}
    assert await cache.delegated_server("example.org") == "m.example.org"


async def test_a_fresh_answer_survives_a_failed_refresh_and_outages_retry_soon() -> None:
    clock = Clock()
    fetch = FakeWellKnown({"example.org": ok("m.example.org", **{"cache-control": "max-age=1000"})})
    cache = WellKnownCache(fetch, clock=clock)
    assert await cache.delegated_server("example.org") == "m.example.org"
    fetch.answers["example.org"] = WellKnownUnavailable("down")
    clock.now += 900  # in the refresh window: the fetch fails, the answer is kept
    assert await cache.delegated_server("example.org") == "m.example.org"
    clock.now += 200  # expired: no delegation now, but asked again after 2 minutes
    assert await cache.delegated_server("example.org") is None
    fetched = len(fetch.fetched)
    clock.now += 121
    fetch.answers["example.org"] = ok("m.example.org")
    assert await cache.delegated_server("example.org") == "m.example.org"
    assert len(fetch.fetched) == fetched + 1


async def test_the_cache_is_bounded() -> None:
    fetch = FakeWellKnown()
    cache = WellKnownCache(fetch, clock=Clock(), max_entries=3)
    for i in range(10):
        await cache.delegated_server(f"h{i}.example")
    assert len(cache) == 3
    await cache.delegated_server("h9.example")  # still cached
    assert len(fetch.fetched) == 10
    await cache.delegated_server("h0.example")  # evicted: fetched again
    assert len(fetch.fetched) == 11
