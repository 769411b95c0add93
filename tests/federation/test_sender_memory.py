"""The sender's memory with 100 unreachable destinations and a growing backlog: what it
holds stays flat (the backlog lives in SQLite, one row per destination and room).
tests/bench/bench_federation_sender.py runs the same with 10,000 events."""

from __future__ import annotations

import gc
import tracemalloc

from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database

from ..rooms.conftest import RemoteServer, rows
from .conftest import FakeFederation, SenderHarness, room_with, say, settle, until

SENDER_FILES = ("*/pocketserver/federation/*", "*/pocketserver/storage/federation_sender.py")


def sender_bytes() -> int:
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, pattern) for pattern in SENDER_FILES]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def test_a_hundred_unreachable_destinations_cost_no_memory(
    harness: SenderHarness, writer: RoomWriter, fed: FakeFederation, db: Database
) -> None:
    servers = [RemoteServer(f"s{n}.test", f"k_{n}") for n in range(100)]
    fed.down.update(s.name for s in servers)
    rooms = [await room_with(writer, *servers[:50]), await room_with(writer, *servers[50:])]
    sender = await harness.start()
    tracemalloc.start()
    try:
        await say(writer, rooms[0], "first")
        await say(writer, rooms[1], "first")
        await until(lambda: sender.statistics().failed_attempts == 100)
        await settle()
        figures = []
        for _ in range(2):
            for n in range(150):
                await say(writer, rooms[n % 2], f"m{n}")
            await until(
                lambda: (
                    rows(db, "SELECT max(stream_ordering) FROM federation_destination_rooms")
                    == rows(db, "SELECT max(stream_ordering) FROM events")
                )
            )
            await settle()  # the matcher has handed the batch over
            figures.append(sender_bytes())
    finally:
        tracemalloc.stop()
    stats = sender.statistics()
    assert stats.destinations_in_memory == 0
    assert stats.pending_pdus == 0
    assert fed.attempts.total() == 100  # each tried once, then backing off
    owed = rows(db, "SELECT count(*) FROM federation_destination_rooms")[0][0]
    assert owed == 100  # one row per destination and room, not per event
    assert figures[1] - figures[0] < 32 << 10, figures
    assert figures[1] < 256 << 10, figures
