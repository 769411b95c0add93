"""Typing notifications: timeouts on trio's clock, bounds, the stream and /sync."""

from __future__ import annotations

import pytest
import trio

from pocketserver.core.event_filter import SyncFilter
from pocketserver.ephemeral.clock import StreamClock
from pocketserver.ephemeral.typing_notices import TypingService
from pocketserver.errors import MatrixError
from pocketserver.streams.notifier import Notifier
from tests.ephemeral.helpers import (
    ALICE,
    BOB,
    CAROL,
    OTHER,
    ROOM,
    FakeWallClock,
    context,
    ephemeral,
)


async def _joined(user_id: str, room_id: str) -> None:
    await trio.lowlevel.checkpoint()
    if user_id == CAROL:
        raise MatrixError(403, "M_FORBIDDEN", "not joined")


def _service(**kwargs: int) -> tuple[TypingService, Notifier]:
    notifier = Notifier()
    return TypingService(_joined, notifier, now_ms=FakeWallClock(), **kwargs), notifier


async def test_typing_appears_and_advances_the_stream() -> None:
    typing, notifier = _service()
    start = typing.position()
    await typing.set_typing(ALICE, ROOM, True, 10_000)
    assert typing.typers(ROOM) == [ALICE]
    assert typing.position() > start
    assert notifier.stream_position("typing") == typing.position()
    ctx = context(user_id=BOB)
    assert await typing.add_to_sync(ctx, start, typing.position())
    assert ephemeral(ctx, ROOM) == [{"type": "m.typing", "content": {"user_ids": [ALICE]}}]
    assert ephemeral(ctx, OTHER) == []
    # Nothing changed since: nothing sent.
    again = context(user_id=BOB)
    assert not await typing.add_to_sync(again, typing.position(), typing.position())
    assert ephemeral(again, ROOM) == []


async def test_refresh_does_not_advance_but_stop_does() -> None:
    typing, _ = _service()
    await typing.set_typing(ALICE, ROOM, True, 10_000)
    pos = typing.position()
    await typing.set_typing(ALICE, ROOM, True, 10_000)
    assert typing.position() == pos
    await typing.set_typing(BOB, ROOM, False)  # not typing: no change
    assert typing.position() == pos
    await typing.set_typing(ALICE, ROOM, False)
    assert typing.position() > pos
    assert typing.typers(ROOM) == []
    ctx = context()
    assert await typing.add_to_sync(ctx, pos, typing.position())
    assert ephemeral(ctx, ROOM) == [{"type": "m.typing", "content": {"user_ids": []}}]


@pytest.mark.parametrize("membership", ["leave", "ban", "invite", "knock", None])
async def test_no_longer_joined_stops_typing(membership: str | None) -> None:
    typing, notifier = _service()
    await typing.set_typing(ALICE, ROOM, True, 10_000)
    await typing.set_typing(BOB, ROOM, True, 10_000)
    pos = typing.position()
    typing.membership_changed(ALICE, ROOM, "join")  # a profile change: still typing
    assert typing.position() == pos
    typing.membership_changed(ALICE, ROOM, membership)
    assert typing.typers(ROOM) == [BOB]
    assert typing.position() > pos
    assert notifier.stream_position("typing") == typing.position()
    after = typing.position()
    typing.membership_changed(ALICE, ROOM, membership)  # already stopped: no change
    typing.membership_changed(CAROL, OTHER, membership)
    assert typing.position() == after


async def test_not_joined_changes_nothing() -> None:
    typing, _ = _service()
    pos = typing.position()
    with pytest.raises(MatrixError) as e:
        await typing.set_typing(CAROL, ROOM, True, 10_000)
    assert e.value.status == 403
    assert typing.position() == pos
    assert typing.typers(ROOM) == []


async def test_timeout_expires_and_wakes_waiters(autojump_clock: trio.abc.Clock) -> None:
    typing, notifier = _service()
    async with trio.open_nursery() as nursery:
        await nursery.start(typing.run)
        await typing.set_typing(ALICE, ROOM, True, 5_000)
        pos = typing.position()
        started = trio.current_time()
        await notifier.wait_for_change(notifier.position, {"typing": pos}, timeout_s=60)
        assert 5 <= trio.current_time() - started < 6
        assert typing.typers(ROOM) == []
        assert typing.position() > pos
        nursery.cancel_scope.cancel()


async def test_refresh_extends_the_timeout(autojump_clock: trio.abc.Clock) -> None:
    typing, _ = _service()
    async with trio.open_nursery() as nursery:
        await nursery.start(typing.run)
        await typing.set_typing(ALICE, ROOM, True, 5_000)
        await trio.sleep(4)
        await typing.set_typing(ALICE, ROOM, True, 5_000)
        await trio.sleep(4)
        assert typing.typers(ROOM) == [ALICE]
        await trio.sleep(1.5)
        assert typing.typers(ROOM) == []
        nursery.cancel_scope.cancel()


async def test_timeout_is_capped(autojump_clock: trio.abc.Clock) -> None:
    typing, _ = _service()
    await typing.set_typing(ALICE, ROOM, True, 10 * 60_000)
    await trio.sleep(29.9)
    assert typing.typers(ROOM) == [ALICE]
    await trio.sleep(0.2)
    assert typing.typers(ROOM) == []  # lazily expired, even without the run task


async def test_per_room_bound_drops_the_soonest_to_expire() -> None:
    typing, _ = _service(max_per_room=2)
    await typing.set_typing(ALICE, ROOM, True, 3_000)
    await typing.set_typing(BOB, ROOM, True, 1_000)
    await typing.set_typing("@dan:local.test", ROOM, True, 2_000)
    assert typing.typers(ROOM) == [ALICE, "@dan:local.test"]
    assert typing.statistics().typers == 2


async def test_total_bound() -> None:
    typing, _ = _service(max_typers=3)
    for i in range(5):
        await typing.set_typing(f"@u{i}:local.test", f"!r{i}:local.test", True, 1_000 + i)
    stats = typing.statistics()
    assert stats.typers == 3
    assert stats.rooms == 3
    assert typing.typers("!r0:local.test") == []
    assert typing.typers("!r4:local.test") == ["@u4:local.test"]


async def test_refreshes_do_not_grow_the_heap() -> None:
    typing, _ = _service()
    for _ in range(1_000):
        await typing.set_typing(ALICE, ROOM, True, 10_000)
    assert len(typing._deadlines) < 100


async def test_new_rooms_get_current_typers_and_initial_sync() -> None:
    typing, _ = _service()
    await typing.set_typing(ALICE, ROOM, True, 10_000)
    pos = typing.position()
    ctx = context(user_id=BOB, new_rooms={ROOM, OTHER})
    assert await typing.add_to_sync(ctx, pos, pos)
    assert ephemeral(ctx, ROOM)[0]["content"] == {"user_ids": [ALICE]}
    assert ephemeral(ctx, OTHER) == []  # nobody types there: nothing to say
    initial = context(user_id=BOB)
    assert await typing.add_to_sync(initial, None, pos)
    assert ephemeral(initial, ROOM)[0]["content"] == {"user_ids": [ALICE]}
    assert ephemeral(initial, OTHER) == []


async def test_initial_sync_tells_of_typing_that_stopped() -> None:
    """A client syncing from scratch right after a "stopped typing" request is told
    that nobody types there (as Synapse does; SyTest 20typing "Typing can be
    explicitly stopped"); a room without typing activity still gets nothing."""
    typing, _ = _service()
    await typing.set_typing(ALICE, ROOM, True, 10_000)
    await typing.set_typing(ALICE, ROOM, False)
    initial = context(user_id=BOB, joined=[ROOM, OTHER])
    assert await typing.add_to_sync(initial, None, typing.position())
    assert ephemeral(initial, ROOM) == [{"type": "m.typing", "content": {"user_ids": []}}]
    assert ephemeral(initial, OTHER) == []
    # The clock forgets old rooms (bounded): then nothing is said of them.
    small, _ = _service(max_changed_rooms=1)
    await small.set_typing(ALICE, ROOM, True, 10_000)
    await small.set_typing(ALICE, ROOM, False)
    await small.set_typing(ALICE, OTHER, True, 10_000)
    forgotten = context(user_id=BOB, joined=[ROOM, OTHER])
    assert await small.add_to_sync(forgotten, None, small.position())
    assert ephemeral(forgotten, ROOM) == []
    assert ephemeral(forgotten, OTHER)[0]["content"] == {"user_ids": [ALICE]}


async def test_unknown_positions_reset_every_room() -> None:
    typing, _ = _service(max_changed_rooms=2)
    first = typing.position()
    for room in ("!a:local.test", "!b:local.test", "!c:local.test"):
        await typing.set_typing(ALICE, room, True, 10_000)
    # "first" is below the floor now: every joined room is sent, typers or not.
    ctx = context(user_id=BOB, joined=[ROOM, "!a:local.test"])
    assert await typing.add_to_sync(ctx, first, typing.position())
    assert ephemeral(ctx, ROOM) == [{"type": "m.typing", "content": {"user_ids": []}}]
    assert ephemeral(ctx, "!a:local.test")[0]["content"] == {"user_ids": [ALICE]}
    # A token from the future (another process) is reset the same way.
    later = context(user_id=BOB, joined=[ROOM])
    assert await typing.add_to_sync(later, typing.position() + 10**9, typing.position())
    assert ephemeral(later, ROOM) == [{"type": "m.typing", "content": {"user_ids": []}}]


async def test_ephemeral_filter() -> None:
    typing, _ = _service()
    start = typing.position()
    await typing.set_typing(ALICE, ROOM, True, 10_000)
    flt = SyncFilter.parse({"room": {"ephemeral": {"not_types": ["m.typing"]}}})
    ctx = context(user_id=BOB, flt=flt)
    assert not await typing.add_to_sync(ctx, start, typing.position())


def test_positions_survive_a_restart() -> None:
    wall = FakeWallClock()
    before = StreamClock(10, wall)
    for _ in range(5):
        before.advance(["k"])
    wall.now += 2_000  # the restart takes a while
    after = StreamClock(10, wall)
    assert after.position > before.position
    assert not after.knows(before.position)  # the old token is answered with a reset
    assert after.knows(after.position)


def test_clock_bounds_its_keys() -> None:
    clock = StreamClock(2, FakeWallClock())
    first = clock.position
    a = clock.advance(["a"])
    clock.advance(["b"])
    clock.advance(["c"])
    assert len(clock) == 2
    assert clock.floor == a
    assert not clock.knows(first)
    assert list(clock.changed_between(a, clock.position)) == ["c", "b"]
