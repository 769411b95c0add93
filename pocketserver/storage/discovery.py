"""Lookups for timestamp_to_event and mutual rooms."""

from __future__ import annotations

import sqlite3

_VISIBLE = "outlier = 0 AND rejected IS NULL AND soft_failed = 0"


def events_near_ts(
    conn: sqlite3.Connection, room_id: str, ts: int, forwards: bool, limit: int
) -> list[tuple[str, int]]:
    """(event_id, origin_server_ts) of the room's events at or after ``ts`` (oldest
    first) or at or before it (newest first)."""
    if forwards:
        sql = (
            f"SELECT event_id, origin_server_ts FROM events WHERE room_id = ? AND {_VISIBLE}"
            " AND origin_server_ts >= ? ORDER BY origin_server_ts, stream_ordering LIMIT ?"
        )
    else:
        sql = (
            f"SELECT event_id, origin_server_ts FROM events WHERE room_id = ? AND {_VISIBLE}"
            " AND origin_server_ts <= ?"
            " ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT ?"
        )
    return [(str(r[0]), int(r[1])) for r in conn.execute(sql, (room_id, ts, limit))]


def mutual_rooms(
    conn: sqlite3.Connection, user_a: str, user_b: str, after: str | None, limit: int
) -> tuple[list[str], int]:
    """Rooms both users are joined to, ordered by ID after ``after``; and their count."""
    base = (
        "FROM current_state a JOIN current_state b ON a.room_id = b.room_id"
        " WHERE a.type = 'm.room.member' AND a.state_key = ? AND a.membership = 'join'"
        " AND b.type = 'm.room.member' AND b.state_key = ? AND b.membership = 'join'"
    )
    count = int(conn.execute(f"SELECT count(*) {base}", (user_a, user_b)).fetchone()[0])
    rows = conn.execute(
        f"SELECT a.room_id {base} AND a.room_id > ? ORDER BY a.room_id LIMIT ?",
        (user_a, user_b, after or "", limit),
    )
    return [str(r[0]) for r in rows], count
