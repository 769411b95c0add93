"""/sync waits for the evaluation of events up to its own position only."""

from __future__ import annotations

import trio
import trio.testing

from pocketserver.push.evaluator import PushEvaluator
from pocketserver.rooms.writer import PersistedEvent


def _event(n: int) -> PersistedEvent:
    return PersistedEvent(f"$e{n}", "!r:test.local", n, {"sender": "@a:test.local"})


async def test_wait_evaluated_ignores_later_events(autojump_clock: object) -> None:
    ev = PushEvaluator(None, None, "test.local")  # type: ignore[arg-type]
    gate = trio.Event()
    processed: list[int] = []

    async def process(items: list[object]) -> None:
        for item in items:
            assert isinstance(item, PersistedEvent)
            if item.stream_ordering == 5:
                await gate.wait()  # the later event takes long
            processed.append(item.stream_ordering)

    ev.process = process  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(ev.run)
        await ev.wait_evaluated(0)  # nothing queued at or before 0
        ev.on_event(_event(1))
        await trio.testing.wait_all_tasks_blocked()
        ev.on_event(_event(5))
        start = trio.current_time()
        await ev.wait_evaluated(1, timeout_s=10)
        assert processed == [1]
        assert trio.current_time() == start  # did not wait for event 5
        await ev.wait_evaluated(5, timeout_s=2)
        assert trio.current_time() - start == 2  # gave up: 5 is still being evaluated
        gate.set()
        await ev.wait_evaluated(5, timeout_s=10)
        assert processed == [1, 5]
        assert ev.statistics().queued == 0
        nursery.cancel_scope.cancel()


async def test_dropped_events_are_not_waited_for(autojump_clock: object) -> None:
    ev = PushEvaluator(None, None, "test.local", queue_size=1)  # type: ignore[arg-type]
    ev.on_event(_event(1))
    ev.on_event(_event(2))  # dropped: the queue is full
    assert ev.statistics().dropped == 1

    async def process(items: list[object]) -> None:
        await trio.lowlevel.checkpoint()

    ev.process = process  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(ev.run)
        start = trio.current_time()
        await ev.wait_evaluated(2, timeout_s=10)
        assert trio.current_time() == start
        nursery.cancel_scope.cancel()
