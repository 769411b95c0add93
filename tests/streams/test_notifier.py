"""The notifier: wakes waiters with a stream position only, and only the waiters a
change concerns."""

from __future__ import annotations

import math

import trio
import trio.testing

from pocketserver.streams.notifier import EVENTS_LOG, Notifier, NotifierStatistics


async def test_wait_past_wakes_on_notify_with_the_position(autojump_clock: trio.abc.Clock):
    notifier = Notifier(position=5)
    got: list[int] = []

    async def waiter() -> None:
        got.append(await notifier.wait_past(5))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        notifier.notify(9)
    assert got == [9]
    assert notifier.position == 9


async def test_timeout_returns_the_current_position(autojump_clock: trio.abc.Clock):
    notifier = Notifier(position=3)
    start = trio.current_time()
    assert await notifier.wait_past(3, timeout_s=30) == 3
    assert trio.current_time() - start == 30
    assert notifier.statistics().waiters == 0


async def test_already_past_returns_at_once_with_a_checkpoint():
    notifier = Notifier(position=7)
    with trio.CancelScope() as scope:
        scope.cancel()
        await notifier.wait_past(2)  # an async function always checkpoints
    assert scope.cancelled_caught
    assert await notifier.wait_past(2) == 7


async def test_many_waiters_wake_on_one_notify(autojump_clock: trio.abc.Clock):
    notifier = Notifier()
    n = 200
    got: list[int] = []

    async def waiter(since: int) -> None:
        got.append(await notifier.wait_past(since, timeout_s=math.inf))

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(waiter, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert notifier.statistics() == NotifierStatistics(
            position=0, waiters=n, notifications=0, wakeups=0
        )
        notifier.notify(1)
    assert got == [1] * n
    assert notifier.statistics() == NotifierStatistics(
        position=1, waiters=0, notifications=1, wakeups=n
    )


async def test_waiter_below_a_later_position_keeps_waiting(autojump_clock: trio.abc.Clock):
    notifier = Notifier()
    got: list[int] = []

    async def waiter() -> None:
        got.append(await notifier.wait_past(4))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        notifier.notify(3)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        notifier.notify(5)
    assert got == [5]


async def test_notify_with_a_lower_or_equal_position_wakes_nobody_past_it(
    autojump_clock: trio.abc.Clock,
):
    notifier = Notifier(position=10)
    got: list[int] = []

    async def waiter() -> None:
        got.append(await notifier.wait_past(10, timeout_s=5))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        notifier.notify(4)
        notifier.notify(10)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
    assert got == [10]  # the timeout, not a wake-up
    assert notifier.position == 10


async def test_cancelled_waiter_is_not_counted(autojump_clock: trio.abc.Clock):
    notifier = Notifier()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notifier.wait_past, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert notifier.statistics().waiters == 1
        nursery.cancel_scope.cancel()
    assert notifier.statistics().waiters == 0


class _Waits:
    """Long-polls of named users, each listening to some rooms, run in a nursery."""

    def __init__(self, notifier: Notifier, nursery: trio.Nursery) -> None:
        self.notifier = notifier
        self.nursery = nursery
        self.done: list[str] = []

    def start(
        self,
        name: str,
        user_id: str,
        rooms: tuple[str, ...],
        events: int,
        streams: dict[str, int] | None = None,
    ) -> None:
        async def wait() -> None:
            await self.notifier.wait_for_change(
                events, streams or {}, 60, user_id=user_id, rooms=rooms
            )
            if trio.current_time() < 60:
                self.done.append(name)

        self.nursery.start_soon(wait)


async def test_an_event_wakes_only_the_users_of_its_room(autojump_clock: trio.abc.Clock):
    notifier = Notifier(position=10)
    async with trio.open_nursery() as nursery:
        waits = _Waits(notifier, nursery)
        waits.start("alice in X", "@alice:hs", ("!x:hs",), 10)
        waits.start("bob in Y", "@bob:hs", ("!y:hs",), 10)
        waits.start("carol in X and Y", "@carol:hs", ("!x:hs", "!y:hs"), 10)
        await trio.testing.wait_all_tasks_blocked()
        notifier.notify(11, "!x:hs")
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(waits.done) == ["alice in X", "carol in X and Y"]
        assert notifier.statistics().wakeups == 2  # bob's request never ran
        assert notifier.statistics().waiters == 1
    assert sorted(waits.done) == ["alice in X", "carol in X and Y"]  # bob timed out


async def test_a_membership_change_wakes_its_target_outside_the_room(
    autojump_clock: trio.abc.Clock,
):
    """A kicked (or invited) user is not listening to the room: the event names them."""
    notifier = Notifier(position=10)
    async with trio.open_nursery() as nursery:
        waits = _Waits(notifier, nursery)
        waits.start("dave", "@dave:hs", (), 10)
        waits.start("erin", "@erin:hs", (), 10)
        await trio.testing.wait_all_tasks_blocked()
        notifier.notify(11, "!x:hs", {"@dave:hs"})
        await trio.testing.wait_all_tasks_blocked()
        assert waits.done == ["dave"]
        nursery.cancel_scope.cancel()


async def test_a_change_published_before_the_wait_is_seen_at_once(
    autojump_clock: trio.abc.Clock,
):
    """A request that read up to 10 and starts waiting after 11 was published (in its
    room) returns at once; one published in another room does not end its wait."""
    notifier = Notifier(position=10)
    notifier.notify(11, "!y:hs")
    assert not notifier.changed_since("@alice:hs", ("!x:hs",), {"events": 10})
    notifier.notify(12, "!x:hs")
    assert notifier.changed_since("@alice:hs", ("!x:hs",), {"events": 10})
    assert not notifier.changed_since("@alice:hs", ("!x:hs",), {"events": 12})
    start = trio.current_time()
    await notifier.wait_for_change(10, {}, 60, user_id="@alice:hs", rooms=("!x:hs",))
    assert trio.current_time() == start
    await notifier.wait_for_change(11, {}, 5, user_id="@bob:hs", rooms=("!y:hs",))
    assert trio.current_time() == start + 5


async def test_a_token_older_than_the_log_is_answered_at_once():
    """The log is bounded: what it no longer holds may concern anyone."""
    notifier = Notifier(position=0)
    for position in range(1, EVENTS_LOG + 2):
        notifier.notify(position, "!busy:hs")
    assert notifier.changed_since("@alice:hs", ("!quiet:hs",), {"events": 0})
    assert not notifier.changed_since("@alice:hs", ("!quiet:hs",), {"events": 1})
    assert len(notifier._logs["events"]) == EVENTS_LOG


async def test_a_token_from_before_the_start_is_answered_at_once():
    notifier = Notifier(position=50)
    assert notifier.changed_since("@alice:hs", (), {"events": 49})
    assert not notifier.changed_since("@alice:hs", (), {"events": 50})


async def test_other_streams_wake_the_users_and_rooms_they_concern(
    autojump_clock: trio.abc.Clock,
):
    notifier = Notifier(position=10)
    notifier.notify_stream("account_data", 5)  # the stream's start
    notifier.notify_stream("typing", 100)
    notifier.notify_stream("presence", 7)
    streams = {"account_data": 5, "typing": 100, "presence": 7}
    async with trio.open_nursery() as nursery:
        waits = _Waits(notifier, nursery)
        waits.start("alice", "@alice:hs", ("!x:hs",), 10, streams)
        waits.start("bob", "@bob:hs", ("!y:hs",), 10, streams)
        await trio.testing.wait_all_tasks_blocked()
        notifier.notify_stream("account_data", 6, users=("@alice:hs",))
        await trio.testing.wait_all_tasks_blocked()
        assert waits.done == ["alice"]
        waits.start("alice", "@alice:hs", ("!x:hs",), 10, {**streams, "account_data": 6})
        await trio.testing.wait_all_tasks_blocked()
        notifier.notify_stream("typing", 101, rooms=("!y:hs",))
        await trio.testing.wait_all_tasks_blocked()
        assert waits.done == ["alice", "bob"]
        waits.start("bob", "@bob:hs", ("!y:hs",), 10, {**streams, "typing": 101})
        await trio.testing.wait_all_tasks_blocked()
        notifier.notify_stream("presence", 8)  # everyone's
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(waits.done) == ["alice", "alice", "bob", "bob"]
    assert notifier.statistics().waiters == 0


async def test_close_wakes_every_waiter(autojump_clock: trio.abc.Clock):
    notifier = Notifier(position=10)
    async with trio.open_nursery() as nursery:
        waits = _Waits(notifier, nursery)
        waits.start("alice", "@alice:hs", ("!x:hs",), 10)
        waits.start("bob", "@bob:hs", (), 10)
        await trio.testing.wait_all_tasks_blocked()
        notifier.close()
    assert sorted(waits.done) == ["alice", "bob"]
    assert notifier._by_room == {}
    assert notifier._by_user == {}


async def test_a_change_published_out_of_order_is_still_seen():
    """Two rooms' writes finishing together may publish 12 before 11."""
    notifier = Notifier(position=10)
    notifier.notify(12, "!y:hs")
    notifier.notify(11, "!x:hs")
    for position in range(13, 20):
        notifier.notify(position, "!y:hs")
    assert notifier.position == 19
    assert notifier.changed_since("@alice:hs", ["!x:hs"], {"events": 10})
    assert not notifier.changed_since("@alice:hs", ["!x:hs"], {"events": 11})
