"""Federation sender figures: memory with 100 unreachable destinations while the backlog
of events owed to them grows to 10,000 (issue 10, "Measure and report").

Run: ``.venv/bin/python tests/bench/bench_federation_sender.py [--events 10000]``.

100 remote servers share 4 rooms with a local user; none of them answers. The local
user sends the events round-robin into the rooms. Printed at each step: the Python
memory allocated by the sender's code (tracemalloc, filtered to its files), the
sender's in-memory counters and the rows of its tables. Target: flat (growth under
64 KiB from the first step to the last) and rows independent of the backlog.
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import trio
import trio.lowlevel

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pocketserver.cache import MemoryBudget  # noqa: E402
from pocketserver.core.crypto import generate_signing_key  # noqa: E402
from pocketserver.federation.sender import FederationSender, FederationSendError  # noqa: E402
from pocketserver.rooms.create import RoomSettings, create_room  # noqa: E402
from pocketserver.rooms.store import RoomStore  # noqa: E402
from pocketserver.rooms.writer import RoomWriter  # noqa: E402
from pocketserver.storage.db import Database  # noqa: E402
from pocketserver.streams.notifier import Notifier  # noqa: E402
from tests.rooms.conftest import RemoteServer  # noqa: E402

SERVER = "bench.test"
ALICE = f"@alice:{SERVER}"
DESTINATIONS = 100
ROOMS = 4
GROWTH_TARGET = 64 << 10
SENDER_FILES = ("*/pocketserver/federation/*", "*/pocketserver/storage/federation_sender.py")


class Unreachable:
    def __init__(self) -> None:
        self.attempts = 0

    async def put_json(
        self,
        destination: str,
        path: str,
        body: dict[str, object],
        timeout: float,  # noqa: ASYNC109 (the sender's interface)
    ) -> dict[str, object]:
        self.attempts += 1
        await trio.lowlevel.checkpoint()
        raise FederationSendError(f"{destination}: connection refused")


def sender_bytes() -> int:
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, pattern) for pattern in SENDER_FILES]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


def count(conn: sqlite3.Connection, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0] or 0)


async def bench(work: Path, events: int) -> bool:
    budget = MemoryBudget(64 << 20)
    db = Database(work / "sender.db", memory_bytes=budget.sqlite_bytes, synchronous="normal")
    store = RoomStore(db, budget)
    writer = RoomWriter(store, SERVER, generate_signing_key("b_1"), Notifier())
    servers = [RemoteServer(f"s{n}.test", f"k_{n}") for n in range(DESTINATIONS)]
    rooms = []
    for _ in range(ROOMS):
        room_id = await create_room(
            writer, ALICE, RoomSettings(room_version="10", preset="public_chat")
        )
        for server in servers:
            user = f"@user:{server.name}"
            await server.send(writer, room_id, user, "m.room.member", {"membership": "join"}, user)
        rooms.append(room_id)
    transport = Unreachable()
    sender = FederationSender(db, store, SERVER, transport, budget=budget, short_retries=())
    writer.add_listener(sender.on_persisted)
    figures: list[int] = []
    ok = True
    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        tracemalloc.start()
        step = max(1, events // 5)
        started = time.perf_counter()
        print(f"{'events owed':>12} {'sender bytes':>13} {'in memory':>10} {'owed rows':>10}")
        for n in range(events):
            content = {"msgtype": "m.text", "body": f"m{n}"}
            await writer.send_event(rooms[n % ROOMS], ALICE, "m.room.message", content)
            if (n + 1) % step == 0:
                await wait_matched(db)
                figures.append(sender_bytes())
                stats = sender.statistics()
                owed = db.read_sync(count, "SELECT count(*) FROM federation_destination_rooms")
                print(
                    f"{n + 1:>12} {figures[-1]:>13,} {stats.destinations_in_memory:>10} {owed:>10}"
                )
        elapsed = time.perf_counter() - started
        tracemalloc.stop()
        nursery.cancel_scope.cancel()
    print(f"transactions attempted: {transport.attempts} (each destination once, then backoff)")
    print(f"events sent and matched: {events / elapsed:.0f}/s (writer included)")
    growth = figures[-1] - figures[0]
    print(f"growth of the sender's memory: {growth:,} bytes (target < {GROWTH_TARGET:,})")
    ok = growth < GROWTH_TARGET and transport.attempts == DESTINATIONS
    db.close()
    return ok


async def wait_matched(db: Database) -> None:
    newest = "SELECT max(stream_ordering) FROM events"
    owed = "SELECT max(stream_ordering) FROM federation_destination_rooms"
    while db.read_sync(count, owed) != db.read_sync(count, newest):  # noqa: ASYNC110
        await trio.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ok = trio.run(bench, Path(tmp), args.events)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
