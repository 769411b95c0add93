"""Read receipts and their stream (``schema/005_receipts_presence.sql``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

UNTHREADED = ""
"""``thread_id`` column value of an unthreaded receipt."""


@dataclass(frozen=True, slots=True)
class Receipt:
    room_id: str
    user_id: str
    receipt_type: str
    thread_id: str | None
    event_id: str
    ts: int


def _receipt(row: sqlite3.Row) -> Receipt:
    return Receipt(
        row["room_id"],
        row["user_id"],
        row["receipt_type"],
        row["thread_id"] or None,
        row["event_id"],
        int(row["ts"]),
    )


def stream_position(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT position FROM receipts_stream WHERE id = 1").fetchone()[0])


def put_receipt(
    conn: sqlite3.Connection,
    room_id: str,
    user_id: str,
    receipt_type: str,
    thread_id: str | None,
    event_id: str,
    event_order: int,
    ts: int,
) -> int | None:
    """Store a receipt unless the stored one for the same key is at a later (or the
    same) event; return the new stream position, or None if nothing changed."""
    thread = thread_id or UNTHREADED
    row = conn.execute(
        "SELECT event_order FROM receipts"
        " WHERE room_id = ? AND user_id = ? AND receipt_type = ? AND thread_id = ?",
        (room_id, user_id, receipt_type, thread),
    ).fetchone()
    if row is not None and int(row[0]) >= event_order:
        return None
    position = stream_position(conn) + 1
    conn.execute("UPDATE receipts_stream SET position = ? WHERE id = 1", (position,))
    conn.execute(
        "INSERT OR REPLACE INTO receipts (room_id, user_id, receipt_type, thread_id, event_id,"
        " event_order, ts, stream_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (room_id, user_id, receipt_type, thread, event_id, event_order, ts, position),
    )
    return position


_VISIBLE = "(receipt_type != 'm.read.private' OR user_id = ?)"


def changed_receipts(
    conn: sqlite3.Connection, viewer: str, since: int, upto: int, rooms: Iterable[str]
) -> list[Receipt]:
    """Receipts changed in ``(since, upto]`` in ``rooms`` that ``viewer`` may see
    (private receipts only their own), oldest first."""
    wanted = set(rooms)
    rows = conn.execute(
        f"SELECT * FROM receipts WHERE stream_id > ? AND stream_id <= ? AND {_VISIBLE}"
        " ORDER BY stream_id",
        (since, upto, viewer),
    )
    return [_receipt(r) for r in rows if r["room_id"] in wanted]


def latest_receipts(
    conn: sqlite3.Connection, viewer: str, rooms: Iterable[str], upto: int, limit: int
) -> list[Receipt]:
    """The last ``limit`` receipts (by change) of each room up to ``upto`` that
    ``viewer`` may see, oldest first per room."""
    result: list[Receipt] = []
    for room_id in rooms:
        rows = conn.execute(
            f"SELECT * FROM receipts WHERE room_id = ? AND stream_id <= ? AND {_VISIBLE}"
            " ORDER BY stream_id DESC LIMIT ?",
            (room_id, upto, viewer, limit),
        ).fetchall()
        result.extend(_receipt(r) for r in reversed(rows))
    return result


def get_receipt(
    conn: sqlite3.Connection, room_id: str, user_id: str, receipt_type: str, thread_id: str | None
) -> Receipt | None:
    row = conn.execute(
        "SELECT * FROM receipts"
        " WHERE room_id = ? AND user_id = ? AND receipt_type = ? AND thread_id = ?",
        (room_id, user_id, receipt_type, thread_id or UNTHREADED),
    ).fetchone()
    return None if row is None else _receipt(row)
