"""Storage steps of a room upgrade."""

from __future__ import annotations

import sqlite3


def move_aliases(conn: sqlite3.Connection, old_room: str, new_room: str) -> int:
    """Point every local alias of ``old_room`` at ``new_room``; return how many moved."""
    cur = conn.execute(
        "UPDATE room_aliases SET room_id = ? WHERE room_id = ?", (new_room, old_room)
    )
    return cur.rowcount
