"""Room DAG figures: message throughput through the writer, and state storage size.

Run: ``.venv/bin/python tests/bench/bench_rooms.py [--messages 10000] [--changes 2000]``.

1. Sending messages into one room through the room writer (``synchronous=full``, a real
   file): events per second and database bytes per event. Target >= 300 events/s.
2. Membership changes in one room: rows and bytes of state storage against the minimum
   (one row per state change) and against a full snapshot per state event. Target:
   within 2x of the minimum.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pocketserver.cache import MemoryBudget  # noqa: E402
from pocketserver.core.crypto import generate_signing_key  # noqa: E402
from pocketserver.rooms.create import RoomSettings, create_room  # noqa: E402
from pocketserver.rooms.store import RoomStore  # noqa: E402
from pocketserver.rooms.writer import RoomWriter  # noqa: E402
from pocketserver.storage import events as event_store  # noqa: E402
from pocketserver.storage import state as state_store  # noqa: E402
from pocketserver.storage.db import Database  # noqa: E402
from pocketserver.streams.notifier import Notifier  # noqa: E402

EVENTS_PER_S_TARGET = 300.0
STATE_STORAGE_TARGET = 2.0
SERVER = "bench.test"
ALICE = f"@alice:{SERVER}"
MEMORY_BUDGET = 64 << 20  # a small host's share for the room caches and SQLite


def make_writer(path: Path) -> tuple[Database, RoomWriter]:
    budget = MemoryBudget(MEMORY_BUDGET)
    db = Database(path, memory_bytes=budget.sqlite_bytes, synchronous="full")
    writer = RoomWriter(RoomStore(db, budget), SERVER, generate_signing_key("b_1"), Notifier())
    return db, writer


def table_bytes(conn: sqlite3.Connection, names: tuple[str, ...]) -> int:
    marks = ",".join("?" * len(names))
    row = conn.execute(f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({marks})", names).fetchone()
    return int(row[0] or 0)


async def bench_messages(work: Path, n: int) -> bool:
    db, writer = make_writer(work / "messages.db")
    try:
        room_id = await create_room(writer, ALICE, RoomSettings(room_version="12", name="bench"))
        before = await db.read(event_store.database_bytes)
        start = time.perf_counter()
        for i in range(n):
            await writer.send_event(
                room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": f"message {i}"}
            )
        elapsed = time.perf_counter() - start
        after = await db.read(event_store.database_bytes)
    finally:
        db.close()
    rate = n / elapsed
    per_event = (after - before) / n
    ok = rate >= EVENTS_PER_S_TARGET
    print(f"[1] {n} messages into one room (room v12, synchronous=full, {work})")
    print(f"    {elapsed:.1f} s, {rate:.0f} events/s (target >= {EVENTS_PER_S_TARGET:.0f})")
    print(f"    database: {per_event:.0f} bytes/event ({(after - before) / 1e6:.1f} MB)")
    print(f"    {'OK' if ok else 'BELOW TARGET'}")
    return ok


async def bench_state(work: Path, changes: int) -> bool:
    db, writer = make_writer(work / "state.db")
    try:
        room_id = await create_room(
            writer, ALICE, RoomSettings(room_version="12", preset="public_chat")
        )
        initial = len(await db.read(state_store.get_current_state_ids, room_id))
        users = [f"@user{i}:{SERVER}" for i in range((changes + 1) // 2)]
        snapshot_rows = sum(range(1, initial + 1))  # a snapshot after each creation event
        size = initial
        done = 0
        start = time.perf_counter()
        for membership in ("join", "leave"):
            for user in users:
                if done == changes:
                    break
                await writer.send_event(
                    room_id, user, "m.room.member", {"membership": membership}, user
                )
                done += 1
                size += membership == "join"
                snapshot_rows += size
        elapsed = time.perf_counter() - start
        rows = await db.read(state_store.state_storage_rows, room_id)
        groups = await db.read(
            lambda c: c.execute(
                "SELECT count(*), sum(prev_group IS NULL) FROM state_groups WHERE room_id = ?",
                (room_id,),
            ).fetchone()
        )
        state_bytes = await db.read(table_bytes, ("state_group_edits", "state_groups"))
    finally:
        db.close()
    minimum = initial + done
    ratio = rows / minimum
    bytes_per_row = state_bytes / rows
    ok = ratio <= STATE_STORAGE_TARGET
    print(f"[2] {done} membership changes in one room ({initial} initial state events)")
    print(f"    {elapsed:.1f} s ({done / elapsed:.0f} events/s)")
    print(f"    state groups: {groups[0]}, of which snapshots: {groups[1]}")
    print(
        f"    state rows: {rows} = {ratio:.2f}x the minimum {minimum} (one per change;"
        f" target <= {STATE_STORAGE_TARGET:.0f}x)"
    )
    print(
        f"    a full snapshot per event would take {snapshot_rows} rows"
        f" ({snapshot_rows / rows:.0f}x more)"
    )
    print(
        f"    state tables: {state_bytes / 1e6:.2f} MB ({bytes_per_row:.0f} bytes/row);"
        f" snapshots per event would be ~{snapshot_rows * bytes_per_row / 1e6:.0f} MB"
    )
    print(f"    {'OK' if ok else 'ABOVE TARGET'}")
    return ok


async def main_async(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="pocket-bench-rooms-", dir=args.dir))
    try:
        ok = await bench_messages(work, args.messages)
        ok = await bench_state(work, args.changes) and ok
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=2_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go")
    return trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
