"""Filters uploaded with ``POST /user/{userId}/filter``."""

from __future__ import annotations

import sqlite3

MAX_FILTERS_PER_USER = 1000


def add_filter(conn: sqlite3.Connection, user_id: str, filter_json: str) -> int:
    """Store a filter and return its ID; an identical filter reuses its ID."""
    row = conn.execute(
        "SELECT filter_id FROM user_filters WHERE user_id = ? AND filter_json = ?",
        (user_id, filter_json),
    ).fetchone()
    if row:
        return int(row[0])
    row = conn.execute(
        "SELECT max(filter_id), count(*) FROM user_filters WHERE user_id = ?", (user_id,)
    ).fetchone()
    next_id = int(row[0] or 0) + 1
    if int(row[1]) >= MAX_FILTERS_PER_USER:
        oldest = conn.execute(
            "SELECT min(filter_id) FROM user_filters WHERE user_id = ?", (user_id,)
        ).fetchone()[0]
        conn.execute(
            "DELETE FROM user_filters WHERE user_id = ? AND filter_id = ?", (user_id, oldest)
        )
    conn.execute(
        "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)",
        (user_id, next_id, filter_json),
    )
    return next_id


def get_filter(conn: sqlite3.Connection, user_id: str, filter_id: int) -> str | None:
    row = conn.execute(
        "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?",
        (user_id, filter_id),
    ).fetchone()
    return str(row[0]) if row else None
