"""Receipt storage: latest per key, only forward, private ones only to their owner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pocketserver.storage import receipts as store
from pocketserver.storage.db import Database
from tests.ephemeral.helpers import ALICE, BOB, OTHER, ROOM


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "r.db", memory_bytes=16 << 20, synchronous="normal")
    yield database
    database.close()


async def test_receipts_move_forward_only(db: Database) -> None:
    assert await db.read(store.stream_position) == 0
    assert await db.write(store.put_receipt, ROOM, ALICE, "m.read", None, "$b", 20, 1) == 1
    assert await db.write(store.put_receipt, ROOM, ALICE, "m.read", None, "$a", 10, 2) is None
    assert await db.write(store.put_receipt, ROOM, ALICE, "m.read", None, "$b", 20, 3) is None
    got = await db.read(store.get_receipt, ROOM, ALICE, "m.read", None)
    assert got is not None
    assert (got.event_id, got.ts, got.thread_id) == ("$b", 1, None)
    # Other threads and types are other keys.
    assert await db.write(store.put_receipt, ROOM, ALICE, "m.read", "main", "$a", 10, 4) == 2
    assert await db.write(store.put_receipt, ROOM, ALICE, "m.read.private", None, "$a", 10, 5) == 3
    assert await db.write(store.put_receipt, ROOM, ALICE, "m.read", None, "$c", 30, 6) == 4
    assert await db.read(store.stream_position) == 4


async def test_changed_and_latest_hide_others_private_receipts(db: Database) -> None:
    await db.write(store.put_receipt, ROOM, ALICE, "m.read", None, "$a", 10, 1)
    await db.write(store.put_receipt, ROOM, ALICE, "m.read.private", None, "$b", 20, 2)
    await db.write(store.put_receipt, OTHER, BOB, "m.read", None, "$x", 5, 3)
    seen_by_bob = await db.read(store.changed_receipts, BOB, 0, 3, [ROOM, OTHER])
    assert [(r.room_id, r.receipt_type) for r in seen_by_bob] == [
        (ROOM, "m.read"),
        (OTHER, "m.read"),
    ]
    seen_by_alice = await db.read(store.changed_receipts, ALICE, 1, 3, [ROOM])
    assert [(r.event_id, r.receipt_type) for r in seen_by_alice] == [("$b", "m.read.private")]
    latest = await db.read(store.latest_receipts, BOB, [ROOM, OTHER], 3, 100)
    assert [r.event_id for r in latest] == ["$a", "$x"]
    upto_one = await db.read(store.latest_receipts, ALICE, [ROOM], 1, 100)
    assert [r.event_id for r in upto_one] == ["$a"]


async def test_latest_is_bounded_per_room(db: Database) -> None:
    for i in range(10):
        await db.write(store.put_receipt, ROOM, f"@u{i}:local.test", "m.read", None, "$a", 1, i)
    latest = await db.read(store.latest_receipts, ALICE, [ROOM], 100, 3)
    assert [r.user_id for r in latest] == [f"@u{i}:local.test" for i in (7, 8, 9)]
