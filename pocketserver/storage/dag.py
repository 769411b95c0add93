"""Walking the room DAG backwards, for what other servers ask of it (/backfill,
/get_missing_events) and for finding who is in a room now by server."""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterable, Sequence

_IN_TIMELINE = "e.outlier = 0 AND e.rejected IS NULL"
"""Events with a place in the timeline: outliers have none, rejected events never count."""


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def timeline_positions(
    conn: sqlite3.Connection, room_id: str, event_ids: Iterable[str]
) -> dict[str, tuple[int, int]]:
    """``event_id -> (depth, stream_ordering)`` for those of ``event_ids`` that are in
    ``room_id``'s timeline (known, not outliers, not rejected)."""
    ids = list(dict.fromkeys(event_ids))
    found: dict[str, tuple[int, int]] = {}
    for chunk in _chunks(ids):
        rows = conn.execute(
            "SELECT e.event_id, e.depth, e.stream_ordering FROM events e"
            f" WHERE e.room_id = ? AND {_IN_TIMELINE}"
            f" AND e.event_id IN ({','.join('?' * len(chunk))})",
            (room_id, *chunk),
        )
        found.update({str(r[0]): (int(r[1]), int(r[2])) for r in rows})
    return found


def prev_events_in_timeline(
    conn: sqlite3.Connection, room_id: str, event_id: str
) -> dict[str, tuple[int, int]]:
    """The prev events of ``event_id`` that are in ``room_id``'s timeline, with their
    ``(depth, stream_ordering)``."""
    rows = conn.execute(
        "SELECT e.event_id, e.depth, e.stream_ordering FROM event_edges ee"
        " JOIN events e ON e.event_id = ee.prev_event_id"
        f" WHERE ee.event_id = ? AND e.room_id = ? AND {_IN_TIMELINE}",
        (event_id, room_id),
    )
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}


def backfill_ids(
    conn: sqlite3.Connection, room_id: str, seeds: Iterable[str], limit: int
) -> list[str]:
    """Up to ``limit`` event IDs reached from ``seeds`` (included) going back along
    ``prev_events``, deepest first.

    Breadth-first in depth order: a priority queue on (depth, stream ordering), both
    descending, as Synapse's ``_get_backfill_events``, so the newest history comes
    first whatever the shape of the DAG. Unknown seeds, outliers and rejected events
    are skipped.
    """
    if limit <= 0:
        return []
    queue: list[tuple[int, int, str]] = [
        (-depth, -stream, event_id)
        for event_id, (depth, stream) in timeline_positions(conn, room_id, seeds).items()
    ]
    heapq.heapify(queue)
    result: list[str] = []
    seen: set[str] = set()
    while queue and len(result) < limit:
        _, _, event_id = heapq.heappop(queue)
        if event_id in seen:
            continue
        seen.add(event_id)
        result.append(event_id)
        for prev_id, (depth, stream) in prev_events_in_timeline(conn, room_id, event_id).items():
            if prev_id not in seen:
                heapq.heappush(queue, (-depth, -stream, prev_id))
    return result


def missing_event_ids(
    conn: sqlite3.Connection,
    room_id: str,
    earliest: Iterable[str],
    latest: Iterable[str],
    limit: int,
    min_depth: int = 0,
) -> list[str]:
    """The events between ``earliest`` and ``latest`` (both excluded), oldest first.

    server-server-api.md ``POST /get_missing_events``: walk back from the prev events
    of ``latest`` (those in this room), breadth first, never past an ``earliest``
    event or below ``min_depth``, until ``limit`` events are found; then answer them
    "approximately chronologically" (Synapse reverses the walk; so do we).
    """
    if limit <= 0:
        return []
    seen = set(earliest)
    front = [e for e in timeline_positions(conn, room_id, latest) if e not in seen]
    seen.update(front)
    found: list[str] = []
    while front and len(found) < limit:
        next_front: list[str] = []
        for event_id in sorted(front):
            prevs = prev_events_in_timeline(conn, room_id, event_id)
            for prev_id in sorted(prevs):
                depth, _ = prevs[prev_id]
                if prev_id in seen or depth < min_depth:
                    continue
                seen.add(prev_id)
                next_front.append(prev_id)
                found.append(prev_id)
                if len(found) >= limit:
                    break
            if len(found) >= limit:
                break
        front = next_front
    found.reverse()
    return found


def joined_servers(conn: sqlite3.Connection, room_id: str) -> set[str]:
    """The server names of the users joined to ``room_id`` now."""
    rows = conn.execute(
        "SELECT state_key FROM current_state"
        " WHERE room_id = ? AND type = 'm.room.member' AND membership = 'join'",
        (room_id,),
    )
    return {str(r[0]).partition(":")[2] for r in rows}


def host_in_room(conn: sqlite3.Connection, room_id: str, server_name: str) -> bool:
    """Whether a user of ``server_name`` is joined to ``room_id`` now."""
    row = conn.execute(
        "SELECT 1 FROM current_state"
        " WHERE room_id = ? AND type = 'm.room.member' AND membership = 'join'"
        " AND substr(state_key, instr(state_key, ':') + 1) = ? LIMIT 1",
        (room_id, server_name),
    ).fetchone()
    return row is not None


def backward_extremities(
    conn: sqlite3.Connection, room_id: str, low: int, high: int | None, limit: int
) -> list[str]:
    """Where our copy of ``room_id``'s history has holes between depths ``low`` and
    ``high`` (None: no upper bound): the prev events that timeline events of those
    depths name but that are not in the timeline (unknown, or held as outliers), the
    ``v`` of a ``/backfill`` request; deepest holes first. The scan is bounded by the
    events in the depth range (the index on ``(room_id, depth)``)."""
    rows = conn.execute(
        "SELECT ee.prev_event_id FROM events e"
        " JOIN event_edges ee ON ee.event_id = e.event_id"
        " LEFT JOIN events p ON p.event_id = ee.prev_event_id"
        " WHERE e.room_id = ? AND e.depth >= ? AND e.depth <= ? AND e.outlier = 0"
        " AND (p.event_id IS NULL OR p.outlier = 1)"
        " ORDER BY e.depth DESC, e.stream_ordering DESC LIMIT ?",
        (room_id, low, (1 << 62) if high is None else high, limit),
    )
    return list(dict.fromkeys(str(r[0]) for r in rows))


def host_joined_or_invited(conn: sqlite3.Connection, room_id: str, server_name: str) -> bool:
    """Whether a user of ``server_name`` is joined to ``room_id`` now, or invited."""
    row = conn.execute(
        "SELECT 1 FROM current_state"
        " WHERE room_id = ? AND type = 'm.room.member' AND membership IN ('join', 'invite')"
        " AND substr(state_key, instr(state_key, ':') + 1) = ? LIMIT 1",
        (room_id, server_name),
    ).fetchone()
    return row is not None
