"""The SSRF guard of push delivery: gateways at blocked addresses are never reached.

A real gateway on 127.0.0.1 (a thread, tests/media/fake_web.py) and real time: the
guard sits in the connection, so these tests do not use a mock transport. Names
resolve through a fake resolver, as in the URL preview SSRF tests.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from pocketserver.config.model import DEFAULT_IP_RANGE_BLACKLIST
from pocketserver.core.pushers import NOTIFY_PATH
from pocketserver.errors import MatrixError
from pocketserver.net.addresses import AddressPolicy, literal_address, outbound_policy
from pocketserver.push.delivery import PushDelivery
from pocketserver.push.pushers import PusherService
from tests.media.fake_web import FakeSite, serving
from tests.push.test_delivery import BOB, FakeDb, FakeReader, note

RESOLVE = {
    "gw.test": ["127.0.0.1"],
    "mixed.test": ["127.0.0.2", "127.0.0.1"],
    "v6.test": ["::1"],
}
resolved: list[str] = []


async def fake_resolver(host: str, port: int) -> list[str]:
    await trio.lowlevel.checkpoint()
    resolved.append(host)
    if host not in RESOLVE:
        raise OSError("no such host")
    return RESOLVE[host]


@pytest.fixture
def gateway() -> Iterator[FakeSite]:
    site = FakeSite("127.0.0.1", {NOTIFY_PATH: (200, {"Content-Type": "application/json"}, b"{}")})
    with serving(site):
        yield site


@pytest.fixture
def db(tmp_path: Path) -> FakeDb:
    return FakeDb(tmp_path / "db.sqlite")


def policy(*whitelist: str) -> AddressPolicy:
    return outbound_policy(DEFAULT_IP_RANGE_BLACKLIST, whitelist)


@pytest.fixture
def start(db: FakeDb) -> Callable[..., Any]:
    """``async with start(policy) as delivery``: a running PushDelivery on the network."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def run(p: AddressPolicy, **kwargs: Any) -> AsyncIterator[PushDelivery]:
        d = PushDelivery(
            cast(Any, db), cast(Any, FakeReader()), policy=p, resolver=fake_resolver, **kwargs
        )
        db.delivery = d
        async with trio.open_nursery() as nursery:
            await nursery.start(d.run)
            yield d
            nursery.cancel_scope.cancel()

    return run


async def wait_until(check: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not check():  # noqa: ASYNC110 - polling a thread-fed condition
            await trio.sleep(0.02)


async def test_whitelisted_gateway_is_reached_through_a_name(
    db: FakeDb, gateway: FakeSite, start: Callable[..., Any]
) -> None:
    db.add_pusher("k", url=gateway.url(NOTIFY_PATH, host="gw.test"))
    async with start(policy("127.0.0.1/32")) as d:
        d.on_notifications([note("$a")])
        await wait_until(lambda: d.statistics().sent == 1)
    # The connection went to the checked address; the request still names the host.
    assert gateway.seen == [(NOTIFY_PATH, f"gw.test:{gateway.port}")]
    assert d.statistics().blocked == 0


@pytest.mark.parametrize(
    ("host", "whitelist"),
    [
        ("127.0.0.1", ()),  # the address itself
        ("gw.test", ()),  # a name that resolves to loopback
        ("mixed.test", ("127.0.0.2/32",)),  # one allowed address and one blocked one
        ("v6.test", ("127.0.0.1/32",)),  # a whitelist of IPv4 loopback is not ::1
        ("[::ffff:127.0.0.1]", ()),  # IPv4-mapped IPv6
        ("0.0.0.0", ("0.0.0.0/0",)),  # always blocked, whatever the whitelist says
    ],
)
async def test_blocked_gateway_fails_at_once_with_one_log_line(
    db: FakeDb,
    gateway: FakeSite,
    start: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    host: str,
    whitelist: tuple[str, ...],
) -> None:
    db.add_pusher("k", url=gateway.url(NOTIFY_PATH, host=host))
    with caplog.at_level(logging.WARNING, logger="pocketserver.push.delivery"):
        async with start(policy(*whitelist)) as d:
            d.on_notifications([note("$a"), note("$b")])
            d.on_notifications([note("$c")])
            await wait_until(lambda: d.statistics().blocked == 3)
    stats = d.statistics()
    assert (stats.sent, stats.retries, stats.dropped, stats.queued) == (0, 0, 0, 0)
    assert gateway.seen == []
    lines = [r.getMessage() for r in caplog.records if "pusher blocked" in r.getMessage()]
    assert len(lines) == 1, lines
    assert BOB in lines[0]
    assert "ip_range_whitelist" in lines[0]


async def test_unresolvable_gateway_is_a_network_error(
    db: FakeDb, gateway: FakeSite, start: Callable[..., Any]
) -> None:
    """A name that does not resolve may resolve later: retried like a refused connection."""
    db.add_pusher("k", url=gateway.url(NOTIFY_PATH, host="nx.test"))
    async with start(policy(), max_attempts=2, base_delay_s=0.01) as d:
        d.on_notifications([note("$a")])
        await wait_until(lambda: d.statistics().dropped == 1)
    stats = d.statistics()
    assert (stats.retries, stats.blocked, stats.sent) == (1, 0, 0)


def test_outbound_policy() -> None:
    p = outbound_policy([], [])
    assert not p.allowed("0.0.0.0")
    assert not p.allowed("::")
    assert not p.allowed("not an address")
    assert p.allowed("127.0.0.1")  # an empty blacklist blocks only 0.0.0.0 and ::
    d = policy()
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "100.64.0.1", "169.254.1.1"):
        assert not d.allowed(address), address
    for address in ("::1", "fe80::1", "fd00::1", "::ffff:10.0.0.1"):
        assert not d.allowed(address), address
    assert d.allowed("93.184.216.34")
    assert d.allowed("2606:2800:220:1::1")
    assert policy("10.0.0.0/8").allowed("10.9.9.9")
    assert literal_address("[::1]") == "::1"
    assert literal_address("127.0.0.1") == "127.0.0.1"
    assert literal_address("gw.test") is None


async def test_set_refuses_gateways_at_blocked_literal_addresses(db: FakeDb) -> None:
    service = PusherService(cast(Any, db), cast(Any, FakeReader()), policy=policy("10.9.0.0/16"))

    def body(url: str, pushkey: str) -> dict[str, object]:
        return {
            "kind": "http",
            "app_id": "app",
            "pushkey": pushkey,
            "app_display_name": "A",
            "device_display_name": "D",
            "lang": "en",
            "data": {"url": url},
        }

    for i, host in enumerate(
        ("127.0.0.1:8080", "[::1]", "10.0.0.1", "192.168.1.20", "[::ffff:127.0.0.1]", "0.0.0.0")
    ):
        with pytest.raises(MatrixError) as e:
            await service.set_pusher(BOB, "DEV", body(f"http://{host}{NOTIFY_PATH}", f"bad{i}"))
        assert (e.value.status, e.value.errcode) == (400, "M_INVALID_PARAM"), host
    assert await service.pushers(BOB) == []
    # Names are not resolved when set (delivery checks them); allowed addresses pass.
    for i, host in enumerate(("localhost", "gw.example", "10.9.1.1", "93.184.216.34")):
        await service.set_pusher(BOB, "DEV", body(f"https://{host}{NOTIFY_PATH}", f"ok{i}"))
    assert len(await service.pushers(BOB)) == 4
    assert "localhost" not in resolved
