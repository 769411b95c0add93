"""The notifier: wakes waiters with a stream position only."""

from __future__ import annotations

import math

import trio
import trio.testing

from pocketserver.sync.notifier import Notifier, NotifierStatistics


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


async def test_many_waiters_share_one_event(autojump_clock: trio.abc.Clock):
    notifier = Notifier()
    n = 200
    got: list[int] = []

    async def waiter(since: int) -> None:
        got.append(await notifier.wait_past(since, timeout_s=math.inf))

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(waiter, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert notifier.statistics() == NotifierStatistics(position=0, waiters=n, notifications=0)
        # One trio.Event, whatever the number of waiters.
        assert notifier._changed.statistics().tasks_waiting == n
        notifier.notify(1)
    assert got == [1] * n
    assert notifier.statistics() == NotifierStatistics(position=1, waiters=0, notifications=1)


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


async def test_notify_with_a_lower_or_equal_position_does_nothing(
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
    assert notifier.statistics().notifications == 0


async def test_cancelled_waiter_is_not_counted(autojump_clock: trio.abc.Clock):
    notifier = Notifier()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notifier.wait_past, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert notifier.statistics().waiters == 1
        nursery.cancel_scope.cancel()
    assert notifier.statistics().waiters == 0
