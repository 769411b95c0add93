"""The ``room_aliases`` and ``room_directory`` tables."""

from __future__ import annotations

import sqlite3


def get_alias(conn: sqlite3.Connection, alias: str) -> tuple[str, str] | None:
    """(room_id, creator) of an alias."""
    row = conn.execute(
        "SELECT room_id, creator FROM room_aliases WHERE alias = ?", (alias,)
    ).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def insert_alias(
    conn: sqlite3.Connection, alias: str, room_id: str, creator: str, now_ms: int
) -> bool:
    cur = conn.execute(
        "INSERT OR IGNORE INTO room_aliases (alias, room_id, creator, created_ts)"
        " VALUES (?, ?, ?, ?)",
        (alias, room_id, creator, now_ms),
    )
    return cur.rowcount == 1


def delete_alias(conn: sqlite3.Connection, alias: str) -> bool:
    return conn.execute("DELETE FROM room_aliases WHERE alias = ?", (alias,)).rowcount == 1


def aliases_for_room(conn: sqlite3.Connection, room_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias", (room_id,)
    )
    return [str(r[0]) for r in rows]


def set_published(conn: sqlite3.Connection, room_id: str, public: bool, now_ms: int) -> None:
    if public:
        conn.execute(
            "INSERT OR IGNORE INTO room_directory (room_id, published_ts) VALUES (?, ?)",
            (room_id, now_ms),
        )
    else:
        conn.execute("DELETE FROM room_directory WHERE room_id = ?", (room_id,))


def is_published(conn: sqlite3.Connection, room_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM room_directory WHERE room_id = ?", (room_id,)).fetchone()
    return row is not None
