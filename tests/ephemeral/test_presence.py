"""Presence: states derived lazily from timestamps, the sweep, bounds and /sync."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from pocketserver.core.event_filter import SyncFilter
from pocketserver.ephemeral.presence import (
    ANNOUNCE_EVERY_MS,
    IDLE_MS,
    SWEEP_S,
    SYNC_TIMEOUT_MS,
    PresenceService,
    PresenceView,
)
from pocketserver.storage.db import Database
from pocketserver.storage.presence import users_sharing_a_room
from pocketserver.streams.notifier import Notifier
from tests.ephemeral.helpers import ALICE, BOB, CAROL, ROOM, FakeWallClock, context


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "p.db", memory_bytes=16 << 20, synchronous="normal")
    yield database
    database.close()


async def _join(db: Database, room_id: str, *users: str) -> None:
    def write(conn: sqlite3.Connection) -> None:
        for user in users:
            conn.execute(
                "INSERT INTO current_state (room_id, type, state_key, event_id, membership)"
                " VALUES (?, 'm.room.member', ?, ?, 'join')",
                (room_id, user, f"$join-{user}-{room_id}"),
            )

    await db.write(write)


def _service(db: Database, **kwargs: object) -> tuple[PresenceService, FakeWallClock, Notifier]:
    wall = FakeWallClock()
    notifier = Notifier()
    return PresenceService(db, notifier, now_ms=wall, **kwargs), wall, notifier  # type: ignore[arg-type]


def _presence(ctx) -> dict[str, dict[str, object]]:
    return {e["sender"]: e["content"] for e in ctx.body["presence"]["events"]}


async def test_set_and_get(db: Database) -> None:
    presence, wall, notifier = _service(db)
    assert presence.get(ALICE).to_json() == {"presence": "offline"}
    presence.set_state(ALICE, "online", "lunch")
    wall.now += 1_000
    assert presence.get(ALICE).to_json() == {
        "presence": "online",
        "last_active_ago": 1_000,
        "currently_active": True,
        "status_msg": "lunch",
    }
    assert notifier.stream_position("presence") == presence.position()
    presence.set_state(ALICE, "unavailable", None)
    assert presence.get(ALICE).to_json() == {"presence": "unavailable", "last_active_ago": 0}


async def test_a_put_without_sync_goes_offline_after_the_sync_timeout(db: Database) -> None:
    presence, wall, _ = _service(db)
    presence.set_state(ALICE, "online", None)
    wall.now += SYNC_TIMEOUT_MS + 1
    assert presence.get(ALICE).presence == "offline"


async def test_syncing_keeps_online_then_idle_then_offline(db: Database) -> None:
    presence, wall, _ = _service(db)
    async with presence.syncing(ALICE, "online"):
        assert presence.get(ALICE).presence == "online"
        wall.now += IDLE_MS - 1
        assert presence.get(ALICE).presence == "online"
        assert not presence.get(ALICE).currently_active
        wall.now += 2
        assert presence.get(ALICE).presence == "unavailable"  # idle while connected
        presence.bump_active(ALICE)
        assert presence.get(ALICE).presence == "online"
    wall.now += SYNC_TIMEOUT_MS - 1
    assert presence.get(ALICE).presence == "online"  # between two long-polls
    wall.now += 2
    assert presence.get(ALICE).presence == "offline"


async def test_set_presence_unavailable_and_offline(db: Database) -> None:
    presence, _, _ = _service(db)
    async with presence.syncing(ALICE, "offline"):
        assert presence.get(ALICE).presence == "offline"
    assert presence.statistics().users == 0  # nothing tracked
    async with presence.syncing(ALICE, "unavailable"):
        assert presence.get(ALICE).presence == "unavailable"
        presence.bump_active(ALICE)  # activity brings them online
        assert presence.get(ALICE).presence == "online"


async def test_explicit_unavailable_is_kept_by_online_syncs(db: Database) -> None:
    presence, _, _ = _service(db)
    async with presence.syncing(ALICE, "online"):
        presence.set_state(ALICE, "unavailable", None)
    async with presence.syncing(ALICE, "online"):
        assert presence.get(ALICE).presence == "unavailable"


async def test_untracked_users_stay_untracked(db: Database) -> None:
    presence, _, _ = _service(db)
    presence.bump_active(BOB)
    assert presence.statistics().users == 0
    assert presence.get(BOB).presence == "offline"


async def test_the_sweep_advances_the_stream_on_timeouts(
    db: Database, autojump_clock: trio.abc.Clock
) -> None:
    presence, wall, notifier = _service(db)
    presence.set_state(ALICE, "online", None)
    pos = presence.position()
    async with trio.open_nursery() as nursery:
        await nursery.start(presence.run)
        wall.now += SYNC_TIMEOUT_MS + 1
        await notifier.wait_for_change(0, {"presence": pos}, timeout_s=2 * SWEEP_S)
        assert presence.position() > pos
        assert presence.statistics().not_offline == 0
        nursery.cancel_scope.cancel()


async def test_bounded_users(db: Database) -> None:
    presence, _, _ = _service(db, max_users=3)
    for i in range(10):
        presence.set_state(f"@u{i}:local.test", "online", "x" * 10)
    stats = presence.statistics()
    assert stats.users == 3
    assert stats.not_offline == 3
    assert presence.get("@u0:local.test").presence == "offline"  # forgotten
    assert presence.get("@u9:local.test").presence == "online"


async def test_sync_sends_changes_of_users_sharing_a_room(db: Database) -> None:
    presence, wall, _ = _service(db)
    await _join(db, ROOM, ALICE, BOB)
    start = presence.position()
    presence.set_state(BOB, "online", "hi")
    presence.set_state(CAROL, "online", None)  # shares no room with Alice
    initial = context(ALICE)
    assert await presence.add_to_sync(initial, None, presence.position())
    assert _presence(initial) == {
        BOB: {
            "presence": "online",
            "last_active_ago": 0,
            "currently_active": True,
            "status_msg": "hi",
        }
    }
    incremental = context(ALICE)
    assert await presence.add_to_sync(incremental, start, presence.position())
    assert set(_presence(incremental)) == {BOB}
    nothing = context(ALICE)
    assert not await presence.add_to_sync(nothing, presence.position(), presence.position())
    # Their own presence reaches the user too.
    presence.set_state(ALICE, "unavailable", None)
    mine = context(ALICE)
    pos = presence.position()
    assert await presence.add_to_sync(mine, start, pos)
    assert set(_presence(mine)) == {ALICE, BOB}
    flt = SyncFilter.parse({"presence": {"not_senders": [BOB]}})
    filtered = context(ALICE, flt=flt)
    assert await presence.add_to_sync(filtered, start, pos)
    assert set(_presence(filtered)) == {ALICE}
    wall.now += 1


async def test_visibility(db: Database) -> None:
    presence, _, _ = _service(db)
    await _join(db, ROOM, ALICE, BOB)
    assert await presence.can_see(ALICE, BOB)
    assert await presence.can_see(CAROL, CAROL)
    assert not await presence.can_see(CAROL, ALICE)
    assert await db.read(users_sharing_a_room, ALICE, [BOB, CAROL, ALICE]) == {ALICE, BOB}


async def test_disabled_is_a_no_op(db: Database) -> None:
    presence, _, notifier = _service(db, enabled=False)
    await _join(db, ROOM, ALICE, BOB)
    pos = presence.position()
    presence.set_state(BOB, "online", "hi")
    async with presence.syncing(BOB, "online"):
        presence.bump_active(BOB)
    assert presence.get(BOB).to_json() == {"presence": "offline"}
    assert presence.position() == pos
    assert notifier.stream_position("presence") == 0
    ctx = context(ALICE)
    assert not await presence.add_to_sync(ctx, None, pos)
    assert _presence(ctx) == {}


async def test_listeners_hear_our_users_changes_and_periodic_announcements(
    db: Database,
) -> None:
    """What the federation sender is given: each change of what others see of one of
    our users, never another server's user, and our users who stay online again
    every ANNOUNCE_EVERY_MS (else other servers time them out)."""
    presence, wall, _ = _service(db)
    heard: list[tuple[str, dict[str, object]]] = []

    def listen(user_id: str, view: PresenceView) -> None:
        heard.append((user_id, view.to_edu(user_id)))

    presence.add_listener(listen)
    presence.set_state(ALICE, "online", "here")
    assert heard == [
        (
            ALICE,
            {
                "user_id": ALICE,
                "presence": "online",
                "last_active_ago": 0,
                "currently_active": True,
                "status_msg": "here",
            },
        )
    ]
    presence.set_state(ALICE, "online", "here")  # nothing others see changed
    presence.bump_active(ALICE)
    assert len(heard) == 1
    presence.set_state(ALICE, "unavailable", None)
    assert heard[-1][1]["presence"] == "unavailable"
    presence.set_remote("@rob:remote.test", "online", None, 0, True)
    wall.now += SYNC_TIMEOUT_MS + 1  # ALICE goes offline (no sync): also heard
    presence.sweep()
    assert [u for u, _ in heard] == [ALICE, ALICE, ALICE]
    assert heard[-1][1]["presence"] == "offline"
    # Online for a long time without a change: announced again, only when due.
    heard.clear()
    async with presence.syncing(BOB, "online"):
        assert len(heard) == 1
        elapsed = 0
        while elapsed < ANNOUNCE_EVERY_MS:
            wall.now += 4 * 60 * 1000
            elapsed += 4 * 60 * 1000
            presence.bump_active(BOB)
            presence.sweep()
        assert [u for u, _ in heard] == [BOB, BOB]
        presence.sweep()
        assert len(heard) == 2
