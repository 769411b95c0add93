"""Room history in stream order, for ``/messages`` and ``/context``.

Only events of the visible room graph count (not outliers, rejected or soft-failed).
Positions are stream orderings; ``lo`` is inclusive and ``hi`` exclusive.
"""

from __future__ import annotations

import sqlite3

_VISIBLE = "outlier = 0 AND rejected IS NULL AND soft_failed = 0"


def room_events(
    conn: sqlite3.Connection, room_id: str, lo: int, hi: int, forwards: bool, limit: int
) -> list[tuple[str, int]]:
    """(event ID, stream ordering) of the room's events with position in ``[lo, hi)``:
    the oldest first if ``forwards``, else the newest first; at most ``limit``."""
    order = "ASC" if forwards else "DESC"
    rows = conn.execute(
        "SELECT event_id, stream_ordering FROM events WHERE room_id = ?"
        f" AND stream_ordering >= ? AND stream_ordering < ? AND {_VISIBLE}"
        f" ORDER BY stream_ordering {order} LIMIT ?",
        (room_id, lo, hi, limit),
    )
    return [(str(r[0]), int(r[1])) for r in rows]


def next_position(conn: sqlite3.Connection) -> int:
    """The position just after the newest event: nothing stored is at or after it."""
    row = conn.execute("SELECT max(stream_ordering) FROM events").fetchone()
    return int(row[0] or 0) + 1
