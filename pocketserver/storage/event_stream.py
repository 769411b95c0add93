"""The room event stream across rooms, in stream order, for the deprecated ``/events``.

Only events of the visible room graph count (not outliers, rejected or soft-failed).
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from pocketserver.storage import stream as stream_store

_VISIBLE = "outlier = 0 AND rejected IS NULL AND soft_failed = 0"
_CHUNK = 500


def events_in_rooms(
    conn: sqlite3.Connection, room_ids: Sequence[str], after: int, upto: int, limit: int
) -> list[tuple[str, str, int]]:
    """(event ID, room ID, stream ordering) of the first ``limit`` events of ``room_ids``
    with position in ``(after, upto]``, oldest first."""
    found: list[tuple[int, str, str]] = []
    for i in range(0, len(room_ids), _CHUNK):
        chunk = list(room_ids[i : i + _CHUNK])
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT stream_ordering, event_id, room_id FROM events WHERE room_id IN ({marks})"
            f" AND stream_ordering > ? AND stream_ordering <= ? AND {_VISIBLE}"
            " ORDER BY stream_ordering LIMIT ?",
            [*chunk, after, upto, limit],
        )
        found = heapq.nsmallest(limit, [*found, *((int(r[0]), str(r[1]), str(r[2])) for r in rows)])
    return [(event_id, room_id, so) for so, event_id, room_id in found]


@dataclass(frozen=True, slots=True)
class UserStream:
    """What a user's ``/events`` reads in one transaction."""

    joined: frozenset[str]
    """Rooms the user is joined to now."""
    rows: list[tuple[str, str, int]]
    """The first events (see :func:`events_in_rooms`) of the joined rooms, and the
    user's own membership events in other rooms (invites, leaves, bans)."""


def user_stream(
    conn: sqlite3.Connection, user_id: str, after: int, upto: int, limit: int
) -> UserStream:
    """The first ``limit`` events in ``(after, upto]`` a user's event stream carries."""
    joined = [
        m.room_id for m in stream_store.current_memberships(conn, user_id) if m.membership == "join"
    ]
    rows = events_in_rooms(conn, joined, after, upto, limit)
    joined_set = frozenset(joined)
    own = [
        (m.event_id, m.room_id, m.stream_ordering)
        for m in stream_store.membership_changes(conn, user_id, after, upto)
        if m.room_id not in joined_set
    ]
    if own:
        rows = heapq.nsmallest(limit, [*rows, *own], key=lambda r: r[2])
    return UserStream(joined_set, rows)


def joined_members(conn: sqlite3.Connection, room_id: str) -> list[str]:
    """The room's joined members, from its current state."""
    rows = conn.execute(
        "SELECT state_key FROM current_state WHERE room_id = ? AND type = 'm.room.member'"
        " AND membership = 'join' ORDER BY state_key",
        (room_id,),
    )
    return [str(r[0]) for r in rows]
