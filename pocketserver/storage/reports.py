"""The ``event_reports``, ``room_reports`` and ``user_reports`` tables."""

from __future__ import annotations

import sqlite3


def add_event_report(
    conn: sqlite3.Connection,
    room_id: str,
    event_id: str,
    user_id: str,
    reason: str | None,
    now_ms: int,
) -> None:
    conn.execute(
        "INSERT INTO event_reports (received_ts, room_id, event_id, user_id, reason)"
        " VALUES (?, ?, ?, ?, ?)",
        (now_ms, room_id, event_id, user_id, reason),
    )


def add_room_report(
    conn: sqlite3.Connection, room_id: str, user_id: str, reason: str, now_ms: int
) -> None:
    conn.execute(
        "INSERT INTO room_reports (received_ts, room_id, user_id, reason) VALUES (?, ?, ?, ?)",
        (now_ms, room_id, user_id, reason),
    )


def add_user_report(
    conn: sqlite3.Connection, target_user_id: str, user_id: str, reason: str, now_ms: int
) -> None:
    conn.execute(
        "INSERT INTO user_reports (received_ts, target_user_id, user_id, reason)"
        " VALUES (?, ?, ?, ?)",
        (now_ms, target_user_id, user_id, reason),
    )


def event_reports(conn: sqlite3.Connection, limit: int = 100) -> list[dict[str, object]]:
    """The newest event reports (for admins and tests)."""
    rows = conn.execute(
        "SELECT id, received_ts, room_id, event_id, user_id, reason FROM event_reports"
        " ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    keys = ("id", "received_ts", "room_id", "event_id", "user_id", "reason")
    return [dict(zip(keys, tuple(r), strict=True)) for r in rows]
