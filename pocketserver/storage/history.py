"""Room history in topological order, for ``/messages`` and ``/context``.

Only events of the visible room graph count (not outliers, rejected or soft-failed).
Events are ordered by ``(depth, stream_ordering)`` (the ``events_room_topological``
index): the DAG's order, with backfilled events (negative stream orderings) before
live ones of the same depth. A bound is ``(depth, stream)``, compared with that key,
or ``(None, stream)``, compared with the stream ordering alone (a sync position);
lower bounds are inclusive, upper bounds exclusive.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

_VISIBLE = "outlier = 0 AND rejected IS NULL AND soft_failed = 0"

Bound = tuple[int | None, int]


def _conditions(lower: Sequence[Bound], upper: Sequence[Bound]) -> tuple[list[str], list[int]]:
    where: list[str] = []
    args: list[int] = []
    for depth, stream in lower:
        if depth is None:
            # The shallowest event at or after the stream position starts the scan (an
            # index range on the stream index), so a recent position reads few rows.
            where.append(
                "stream_ordering >= ? AND depth >= (SELECT min(depth) FROM events"
                " INDEXED BY events_room_stream WHERE room_id = ?1 AND stream_ordering >= ?)"
            )
            args += [stream, stream]
        else:
            where.append("(depth, stream_ordering) >= (?, ?)")
            args += [depth, stream]
    for depth, stream in upper:
        if depth is None:
            where.append("stream_ordering < ?")
            args.append(stream)
        else:
            where.append("(depth, stream_ordering) < (?, ?)")
            args += [depth, stream]
    return where, args


def room_events(
    conn: sqlite3.Connection,
    room_id: str,
    lower: Sequence[Bound],
    upper: Sequence[Bound],
    forwards: bool,
    limit: int,
) -> list[tuple[str, int, int]]:
    """(event ID, depth, stream ordering) of the room's events within every bound, in
    topological order: the oldest first if ``forwards``, else the newest first; at
    most ``limit``."""
    order = "ASC" if forwards else "DESC"
    where, args = _conditions(lower, upper)
    extra = "".join(f" AND {w}" for w in where)
    rows = conn.execute(
        # The topological index gives the order; a stream bound only filters (a sync
        # prev_batch is recent: the scan skips the few events after it).
        "SELECT event_id, depth, stream_ordering FROM events"
        f" INDEXED BY events_room_topological WHERE room_id = ?1{extra}"
        f" AND {_VISIBLE} ORDER BY depth {order}, stream_ordering {order} LIMIT ?",
        (room_id, *args, limit),
    )
    return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]


def next_position(conn: sqlite3.Connection) -> int:
    """The position just after the newest event: nothing stored is at or after it."""
    row = conn.execute("SELECT max(stream_ordering) FROM events").fetchone()
    return int(row[0] or 0) + 1
