"""The rc_* room limits in process (rooms/limits.py, ratelimit.take_all), and the
client address and shared-secret registration through the app (issue #9)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio

from pocketserver.app import create_app
from pocketserver.config import load_config
from pocketserver.config.model import RateLimit, RoomRateLimits
from pocketserver.errors import MatrixError
from pocketserver.ratelimit import RateLimiter, take_all
from pocketserver.rooms.limits import RoomActionLimits
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.services import build_services
from tests.harness import make_config, registration_mac_for_tests

ROOM, OTHER = "!r:x", "!o:x"
_n = itertools.count()


def _join_event(room_id: str, membership: str = "join", rejected: str | None = None):  # type: ignore[no-untyped-def]
    pdu = {"type": "m.room.member", "state_key": "@a:x", "content": {"membership": membership}}
    return PersistedEvent("$e", room_id, 1, pdu, rejected=rejected)


def _refused(fn, *args: object) -> MatrixError:  # type: ignore[no-untyped-def]
    with pytest.raises(MatrixError) as e:
        fn(*args)
    assert (e.value.status, e.value.errcode) == (429, "M_LIMIT_EXCEEDED")
    return e.value


async def test_joins_per_user_and_per_room(autojump_clock: trio.abc.Clock) -> None:
    limits = RoomActionLimits(
        RoomRateLimits(joins_local=RateLimit(0.1, 2), joins_per_room=RateLimit(1.0, 3))
    )
    limits.check_join("@a:x", ROOM)
    limits.check_join("@a:x", OTHER)
    retry = _refused(limits.check_join, "@a:x", ROOM).extra["retry_after_ms"]
    assert retry == 10_000
    limits.check_join("@b:x", ROOM)  # another user has their own bucket
    # Joins that happen fill the room's bucket; a rejected event or a leave does not.
    for _ in range(3):
        limits.on_persisted(_join_event(ROOM))
    limits.on_persisted(_join_event(OTHER, "leave"))
    limits.on_persisted(_join_event(OTHER, rejected="auth"))
    _refused(limits.check_join, "@c:x", ROOM)
    limits.check_join("@c:x", OTHER)
    await trio.sleep(1.0)  # one join's worth of room refill
    limits.check_join("@c:x", ROOM)
    await trio.sleep(10.0)
    limits.check_join("@a:x", ROOM)


async def test_invites_take_all_three_buckets_or_none(autojump_clock: trio.abc.Clock) -> None:
    limits = RoomActionLimits(
        RoomRateLimits(
            invites_per_room=RateLimit(0.001, 5),
            invites_per_user=RateLimit(0.001, 1),
            invites_per_issuer=RateLimit(0.001, 5),
        )
    )
    limits.check_invite("@a:x", ROOM, "@bob:x")
    _refused(limits.check_invite, "@a:x", ROOM, "@bob:x")  # Bob's bucket is empty
    # That refusal took nothing from the room or from the inviter: four more fit.
    for i in range(4):
        limits.check_invite("@a:x", ROOM, f"@u{i}:x")
    _refused(limits.check_invite, "@a:x", ROOM, "@new:x")
    limits.check_invite_count(5)
    with pytest.raises(MatrixError) as e:
        limits.check_invite_count(6)
    assert (e.value.status, e.value.errcode) == (400, "M_UNKNOWN")


def test_take_all_leaves_every_bucket_alone_when_one_is_empty() -> None:
    a, b = RateLimiter(RateLimit(1.0, 2)), RateLimiter(RateLimit(1.0, 1))
    b.check("k", 0.0)
    with pytest.raises(MatrixError):
        take_all(0.0, (a, "k"), (b, "k"))
    a.check("k", 0.0)
    a.check("k", 0.0)  # a still had both tokens


async def test_room_creation_and_memory_bound(autojump_clock: trio.abc.Clock) -> None:
    limits = RoomActionLimits(RoomRateLimits(room_creation=RateLimit(0.5, 1)))
    limits.check_room_creation("@a:x")
    _refused(limits.check_room_creation, "@a:x")
    await trio.sleep(2.0)
    limits.check_room_creation("@a:x")
    # Per-room join counts are bounded like every limiter (least recently used dropped).
    for i in range(20_000):
        limits.on_persisted(_join_event(f"!{i}:x"))
    assert len(limits.joins_per_room) == 10_000


# --- through the app, in process --------------------------------------------------------


async def _app(tmp_path: Path, *, x_forwarded: bool, **overrides: object):  # type: ignore[no-untyped-def]
    services = await build_services(load_config(make_config(tmp_path, **overrides)))
    return services, create_app(services, x_forwarded=x_forwarded).test_client()


async def _logins(client, forwarded: list[str]) -> list[int]:  # type: ignore[no-untyped-def]
    codes = []
    for value in forwarded:  # a new user each time: only the address limit can refuse
        r = await client.post(
            "/_matrix/client/v3/login",
            headers={"X-Forwarded-For": value},
            json={"type": "m.login.password", "user": f"nobody{next(_n)}", "password": "x"},
        )
        codes.append(r.status_code)
    return codes


@pytest.mark.parametrize("x_forwarded", [False, True])
async def test_forwarded_address_is_used_only_when_trusted(
    tmp_path: Path, x_forwarded: bool
) -> None:
    slow = {"per_second": 0.001, "burst_count": 2}
    services, client = await _app(tmp_path, x_forwarded=x_forwarded, rc_login={"address": slow})
    try:
        codes = await _logins(client, ["192.0.2.1", "192.0.2.2", "192.0.2.3"])
        assert codes == ([403, 403, 403] if x_forwarded else [403, 403, 429])
        if x_forwarded:  # a first entry written by the client is not the address
            spoof = await _logins(client, ["1.1.1.1, 192.0.2.1", "2.2.2.2, 192.0.2.1"])
            assert spoof == [403, 429]
    finally:
        services.db.close()


async def test_shared_secret_registration_in_a_row(tmp_path: Path) -> None:
    services, client = await _app(
        tmp_path, x_forwarded=False, rc_registration={"per_second": 0.17, "burst_count": 3}
    )
    secret = services.config.registration_shared_secret
    assert secret
    try:
        for i in range(10):
            nonce = (await (await client.get("/_synapse/admin/v1/register")).get_json())["nonce"]
            mac = registration_mac_for_tests(secret, nonce, f"bulk{i}", "pw", False)
            r = await client.post(
                "/_synapse/admin/v1/register",
                json={"nonce": nonce, "username": f"bulk{i}", "password": "pw", "mac": mac},
            )
            assert r.status_code == 200, (i, await r.get_json())
    finally:
        services.db.close()
