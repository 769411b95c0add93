"""Initial and full-state syncs are built a bounded number at a time (memory)."""

from __future__ import annotations

import trio

from pocketserver.cache import MemoryBudget
from pocketserver.core.event_filter import SyncFilter
from pocketserver.streams.notifier import Notifier
from pocketserver.streams.token import SyncToken
from pocketserver.sync.handler import SyncHandler, SyncRequest, full_sync_slots


def test_slots_follow_the_budget() -> None:
    assert full_sync_slots(None) == 2
    assert full_sync_slots(MemoryBudget(64 << 20)) == 2
    assert full_sync_slots(MemoryBudget(128 << 20)) == 2
    assert full_sync_slots(MemoryBudget(512 << 20)) == 8


async def test_at_most_the_slots_build_at_once() -> None:
    handler = SyncHandler(None, None, Notifier(), MemoryBudget(128 << 20))  # type: ignore[arg-type]
    building = peak = 0

    async def build(request: SyncRequest) -> tuple[dict[str, object], bool, SyncToken]:
        nonlocal building, peak
        building += 1
        peak = max(peak, building)
        await trio.sleep(0.01)
        building -= 1
        return {}, True, SyncToken()

    handler._build = build  # type: ignore[method-assign]
    flt = SyncFilter.parse({})
    initial = SyncRequest("@a:t", "D", None, 0, False, flt)
    full = SyncRequest("@a:t", "D", SyncToken(), 0, True, flt)
    incremental = SyncRequest("@a:t", "D", SyncToken(), 0, False, flt)
    async with trio.open_nursery() as nursery:
        for request in [initial] * 5 + [full] * 5:
            nursery.start_soon(handler.sync, request)
    assert peak == 2
    peak = 0
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(handler.sync, incremental)  # not limited
    assert peak == 5
