"""Batched counter writes (push_counts.apply) leave the same rows as one op at a time."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

from pocketserver.storage import push_counts
from pocketserver.storage.push_counts import RECENT_PER_USER, Notify, ReadUpTo
from tests.push.conftest import Db

USERS = ["@a:test.local", "@b:test.local", "@c:test.local"]
ROOMS = ["!r1:test.local", "!r2:test.local"]
THREADS = ["main", "$root"]


def _notify_one_by_one(conn: sqlite3.Connection, op: Notify) -> None:
    """The reference: the per-row statements this module used before batching."""
    row = conn.execute(
        "SELECT read_stream FROM push_counts WHERE user_id = ? AND room_id = ? AND thread_id = ?",
        (op.user_id, op.room_id, op.thread_id),
    ).fetchone()
    if row is not None and op.stream_ordering <= int(row[0]):
        return
    conn.execute(
        "INSERT INTO push_counts (user_id, room_id, thread_id, notification_count,"
        " highlight_count, last_stream) VALUES (?, ?, ?, 1, ?, ?)"
        " ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET"
        " notification_count = notification_count + 1,"
        " highlight_count = highlight_count + excluded.highlight_count,"
        " last_stream = max(last_stream, excluded.last_stream)",
        (op.user_id, op.room_id, op.thread_id, int(op.highlight), op.stream_ordering),
    )
    conn.execute(
        "INSERT OR IGNORE INTO push_notifications (user_id, stream_ordering, room_id, event_id,"
        " thread_id, actions_json, highlight, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            op.user_id,
            op.stream_ordering,
            op.room_id,
            op.event_id,
            op.thread_id,
            json.dumps(op.actions, separators=(",", ":")),
            int(op.highlight),
            op.ts,
        ),
    )
    conn.execute(
        "DELETE FROM push_notifications WHERE user_id = ? AND stream_ordering <"
        " (SELECT stream_ordering FROM push_notifications WHERE user_id = ?"
        "  ORDER BY stream_ordering DESC LIMIT 1 OFFSET ?)",
        (op.user_id, op.user_id, RECENT_PER_USER - 1),
    )


def _apply_one_by_one(conn: sqlite3.Connection, ops: list[Notify | ReadUpTo]) -> None:
    for op in ops:
        if isinstance(op, Notify):
            _notify_one_by_one(conn, op)
        else:
            push_counts.apply(conn, [op])


def _dump(db: Db) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    counts = db.conn.execute("SELECT * FROM push_counts ORDER BY 1, 2, 3").fetchall()
    recent = db.conn.execute("SELECT * FROM push_notifications ORDER BY 1, 2").fetchall()
    return counts, recent


def _random_batches(rng: random.Random) -> list[list[Notify | ReadUpTo]]:
    batches: list[list[Notify | ReadUpTo]] = []
    stream = 0
    for _ in range(40):
        batch: list[Notify | ReadUpTo] = []
        for _ in range(rng.randrange(1, 60)):
            stream += 1
            user, room = rng.choice(USERS), rng.choice(ROOMS)
            if rng.random() < 0.08:
                thread = rng.choice([*THREADS, None])
                # Sometimes behind (a late receipt), sometimes the newest.
                at = stream - rng.randrange(0, rng.choice([80, 800]))
                batch.append(ReadUpTo(user, room, thread, max(1, at)))
            else:
                highlight = rng.random() < 0.2
                actions: list[object] = (
                    ["notify", {"set_tweak": "highlight"}] if highlight else ["notify"]
                )
                batch.append(
                    Notify(
                        user,
                        room,
                        rng.choice(THREADS),
                        stream,
                        f"$e{stream}",
                        actions,
                        highlight,
                        stream,
                    )
                )
        batches.append(batch)
    return batches


def test_batched_apply_equals_one_by_one(tmp_path: Path) -> None:
    for seed in range(3):
        rng = random.Random(seed)
        batches = _random_batches(rng)
        batched, reference = Db(tmp_path / f"b{seed}.db"), Db(tmp_path / f"r{seed}.db")
        try:
            for batch in batches:
                batched.write_sync(push_counts.apply, batch)
                reference.write_sync(_apply_one_by_one, batch)
                assert _dump(batched) == _dump(reference)
            # Enough notifications that the recent lists were trimmed.
            assert any(
                n >= RECENT_PER_USER
                for (n,) in batched.conn.execute(
                    "SELECT count(*) FROM push_notifications GROUP BY user_id"
                )
            )
        finally:
            batched.conn.close()
            reference.conn.close()


def _visible(db: Db) -> tuple[list[tuple[object, ...]], list[object]]:
    counts = db.conn.execute("SELECT * FROM push_counts ORDER BY 1, 2, 3").fetchall()
    recent: list[object] = []
    for user in USERS:
        recent.append(db.read_sync(push_counts.recent_notifications, user, None, 1000))
        recent.append(db.read_sync(push_counts.recent_notifications, user, 150, 7, True))
    return counts, recent


def test_trimming_later_changes_nothing_visible(tmp_path: Path) -> None:
    for seed in range(3):
        rng = random.Random(100 + seed)
        lazy, reference = Db(tmp_path / f"l{seed}.db"), Db(tmp_path / f"r{seed}.db")
        try:
            for n, batch in enumerate(_random_batches(rng)):
                # Trim only now and then, only some users.
                trim = set(USERS[: n % 3]) if n % 4 == 0 else set()
                lazy.write_sync(push_counts.apply, batch, trim)
                reference.write_sync(_apply_one_by_one, batch)
                assert _visible(lazy) == _visible(reference)
            stored = lazy.conn.execute("SELECT count(*) FROM push_notifications").fetchone()[0]
            kept = reference.conn.execute("SELECT count(*) FROM push_notifications").fetchone()[0]
            assert stored > kept  # there was something left to trim
            lazy.write_sync(push_counts.apply, [], set(USERS))
            assert _dump(lazy) == _dump(reference)
        finally:
            lazy.conn.close()
            reference.conn.close()
