"""Who shares a room with whom, for presence (from ``current_state``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

_CHUNK = 500


def users_sharing_a_room(
    conn: sqlite3.Connection, user_id: str, candidates: Iterable[str]
) -> set[str]:
    """The users among ``candidates`` joined to a room that ``user_id`` is joined to
    (``user_id`` itself is among them if it is a candidate and joined anywhere)."""
    wanted = sorted(set(candidates))
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT DISTINCT b.state_key FROM current_state a JOIN current_state b"
            " ON b.room_id = a.room_id AND b.type = 'm.room.member' AND b.membership = 'join'"
            " WHERE a.type = 'm.room.member' AND a.state_key = ? AND a.membership = 'join'"
            f" AND b.state_key IN ({marks})",
            (user_id, *chunk),
        )
        found.update(r[0] for r in rows)
    return found
