"""The federation sender's tables (``schema/020_federation_sender.sql``): the matching
position, each destination's backoff and delivery position, the newest event owed
per destination and room, and the outbox of EDUs that must survive a restart."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# --- matching position -----------------------------------------------------------------


def matched_position(conn: sqlite3.Connection) -> int | None:
    row = conn.execute(
        "SELECT stream_ordering FROM federation_sender_position WHERE id = 1"
    ).fetchone()
    return None if row is None else int(row[0])


def set_matched_position(conn: sqlite3.Connection, stream_ordering: int) -> None:
    conn.execute(
        "INSERT INTO federation_sender_position (id, stream_ordering) VALUES (1, ?)"
        " ON CONFLICT (id) DO UPDATE SET stream_ordering = excluded.stream_ordering",
        (stream_ordering,),
    )


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """An accepted event in the timeline (not an outlier, rejected or soft-failed)."""

    event_id: str
    room_id: str
    stream_ordering: int
    sender: str
    state_before: int | None
    type: str
    state_key: str | None
    membership: str | None


def live_events_after(
    conn: sqlite3.Connection, after: int, limit: int
) -> tuple[list[LiveEvent], int]:
    """Up to ``limit`` events after ``after`` and the position read up to."""
    rows = conn.execute(
        "SELECT event_id, room_id, stream_ordering, sender, state_before, type, state_key,"
        " CASE WHEN type = 'm.room.member' THEN json_extract(json, '$.content.membership') END,"
        " outlier, soft_failed, rejected FROM events WHERE stream_ordering > ?"
        " ORDER BY stream_ordering LIMIT ?",
        (after, limit),
    ).fetchall()
    found = [
        LiveEvent(str(r[0]), str(r[1]), int(r[2]), str(r[3]), r[4], str(r[5]), r[6], r[7])
        for r in rows
        if not r[8] and not r[9] and r[10] is None
    ]
    return found, int(rows[-1][2]) if rows else after


# --- destinations ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryTimings:
    failure_ts: int | None
    retry_last_ts: int
    retry_interval_ms: int

    def due(self, now_ms: int) -> bool:
        return self.retry_interval_ms == 0 or self.retry_last_ts + self.retry_interval_ms <= now_ms


NO_BACKOFF = RetryTimings(None, 0, 0)

_DUE = "(retry_interval_ms = 0 OR retry_last_ts + retry_interval_ms <= ?)"


def retry_timings(conn: sqlite3.Connection, destination: str) -> RetryTimings:
    row = conn.execute(
        "SELECT failure_ts, retry_last_ts, retry_interval_ms FROM federation_destinations"
        " WHERE destination = ?",
        (destination,),
    ).fetchone()
    return NO_BACKOFF if row is None else RetryTimings(row[0], int(row[1]), int(row[2]))


def set_retry_timings(conn: sqlite3.Connection, destination: str, timings: RetryTimings) -> None:
    conn.execute(
        "INSERT INTO federation_destinations"
        " (destination, failure_ts, retry_last_ts, retry_interval_ms) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (destination) DO UPDATE SET failure_ts = excluded.failure_ts,"
        " retry_last_ts = excluded.retry_last_ts, retry_interval_ms = excluded.retry_interval_ms",
        (destination, timings.failure_ts, timings.retry_last_ts, timings.retry_interval_ms),
    )


def clear_backoff(conn: sqlite3.Connection, destination: str) -> bool:
    """Forget the destination's backoff; whether it had one."""
    cur = conn.execute(
        "UPDATE federation_destinations SET failure_ts = NULL, retry_last_ts = 0,"
        " retry_interval_ms = 0 WHERE destination = ? AND retry_interval_ms > 0",
        (destination,),
    )
    return cur.rowcount > 0


def due_destinations(conn: sqlite3.Connection, names: Iterable[str], now_ms: int) -> list[str]:
    """Those of ``names`` that are not backing off (unknown ones are not)."""
    wanted = sorted(set(names))
    waiting: set[str] = set()
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        marks = ",".join("?" * len(chunk))
        waiting.update(
            str(r[0])
            for r in conn.execute(
                f"SELECT destination FROM federation_destinations WHERE destination IN ({marks})"
                f" AND NOT {_DUE}",
                (*chunk, now_ms),
            )
        )
    return [n for n in wanted if n not in waiting]


def _ensure_destination(conn: sqlite3.Connection, destination: str, last: int | None) -> None:
    conn.execute(
        "INSERT INTO federation_destinations (destination, last_successful_stream_ordering)"
        " VALUES (?, ?) ON CONFLICT (destination) DO UPDATE SET last_successful_stream_ordering"
        " = coalesce(last_successful_stream_ordering, excluded.last_successful_stream_ordering)",
        (destination, last),
    )


def _caught_up(conn: sqlite3.Connection, destination: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM federation_destination_rooms r JOIN federation_destinations d"
        " USING (destination) WHERE r.destination = ?"
        " AND r.stream_ordering > coalesce(d.last_successful_stream_ordering, -1) LIMIT 1",
        (destination,),
    ).fetchone()
    return row is None


@dataclass(frozen=True, slots=True)
class Owed:
    """A destination newly owed events: whether it was caught up before them and
    whether it may be tried now."""

    destination: str
    caught_up: bool
    due: bool


def record_owed(
    conn: sqlite3.Connection,
    owed: Mapping[tuple[str, str], int],
    matched_upto: int,
    now_ms: int,
) -> list[Owed]:
    """Record the newest event owed per ``(destination, room_id)`` and move the
    matching position, in one transaction.

    A destination seen for the first time counts as having received everything
    before its first owed event here, so that event can be caught up."""
    first: dict[str, int] = {}
    for (destination, _), ordering in owed.items():
        first[destination] = min(ordering, first.get(destination, ordering))
    result = []
    for destination, ordering in sorted(first.items()):
        _ensure_destination(conn, destination, ordering - 1)
        due = retry_timings(conn, destination).due(now_ms)
        result.append(Owed(destination, _caught_up(conn, destination), due))
    conn.executemany(
        "INSERT INTO federation_destination_rooms (destination, room_id, stream_ordering)"
        " VALUES (?, ?, ?) ON CONFLICT (destination, room_id) DO UPDATE"
        " SET stream_ordering = max(stream_ordering, excluded.stream_ordering)",
        [(d, r, o) for (d, r), o in owed.items()],
    )
    set_matched_position(conn, matched_upto)
    return result


def last_successful(conn: sqlite3.Connection, destination: str) -> int | None:
    row = conn.execute(
        "SELECT last_successful_stream_ordering FROM federation_destinations WHERE destination = ?",
        (destination,),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def mark_delivered(
    conn: sqlite3.Connection,
    destination: str,
    upto: int | None,
    outbox_seqs: Sequence[int],
    clear_retry: bool,
) -> None:
    """A transaction was accepted: move the delivery position to ``upto`` (if given),
    drop the outbox rows it carried, and forget the backoff (if asked)."""
    if upto is not None:
        _ensure_destination(conn, destination, upto)
        conn.execute(
            "UPDATE federation_destinations SET last_successful_stream_ordering ="
            " max(coalesce(last_successful_stream_ordering, ?), ?) WHERE destination = ?",
            (upto, upto, destination),
        )
    for i in range(0, len(outbox_seqs), 500):
        chunk = list(outbox_seqs[i : i + 500])
        marks = ",".join("?" * len(chunk))
        conn.execute(
            f"DELETE FROM federation_edu_outbox WHERE destination = ? AND seq IN ({marks})",
            (destination, *chunk),
        )
    if clear_retry:
        clear_backoff(conn, destination)


@dataclass(frozen=True, slots=True)
class OwedRoom:
    room_id: str
    event_id: str
    stream_ordering: int


def catch_up_rooms(
    conn: sqlite3.Connection, destination: str, after: int, limit: int
) -> list[OwedRoom]:
    """Rooms whose newest owed event is after ``after``, oldest first, with that event."""
    rows = conn.execute(
        "SELECT r.room_id, e.event_id, r.stream_ordering FROM federation_destination_rooms r"
        " JOIN events e ON e.stream_ordering = r.stream_ordering"
        " WHERE r.destination = ? AND r.stream_ordering > ?"
        " ORDER BY r.stream_ordering LIMIT ?",
        (destination, after, limit),
    )
    return [OwedRoom(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def extremities_since(conn: sqlite3.Connection, room_id: str, since: int, limit: int) -> list[str]:
    """The room's forward extremities stored at or after ``since``, newest first."""
    rows = conn.execute(
        "SELECT e.event_id FROM forward_extremities f JOIN events e USING (event_id)"
        " WHERE f.room_id = ? AND e.stream_ordering >= ? AND e.rejected IS NULL"
        " AND e.soft_failed = 0 ORDER BY e.stream_ordering DESC LIMIT ?",
        (room_id, since, limit),
    )
    return [str(r[0]) for r in rows]


def destinations_with_work(
    conn: sqlite3.Connection, now_ms: int, after: str, limit: int
) -> list[str]:
    """Destinations not backing off that are owed events or outbox EDUs, by name."""
    rows = conn.execute(
        "SELECT d.destination FROM federation_destinations d"
        f" WHERE d.destination > ? AND {_DUE} AND (EXISTS (SELECT 1 FROM"
        " federation_destination_rooms r WHERE r.destination = d.destination"
        " AND r.stream_ordering > coalesce(d.last_successful_stream_ordering, -1))"
        " OR EXISTS (SELECT 1 FROM federation_edu_outbox o WHERE o.destination = d.destination))"
        " ORDER BY d.destination LIMIT ?",
        (after, now_ms, limit),
    )
    return [str(r[0]) for r in rows]


# --- durable EDUs --------------------------------------------------------------------

LANE_TO_DEVICE = 0
LANE_DEVICE_LISTS = 1


@dataclass(frozen=True, slots=True)
class OutboxEdu:
    seq: int
    edu_type: str
    content: dict[str, object]


def add_outbox_edus(
    conn: sqlite3.Connection,
    lane: int,
    rows: Sequence[tuple[str, str, Mapping[str, object]]],
    now_ms: int,
) -> list[str]:
    """Queue ``(destination, edu_type, content)`` rows; return the destinations among
    them that are not backing off."""
    names = sorted({r[0] for r in rows})
    for destination in names:
        _ensure_destination(conn, destination, None)
    conn.executemany(
        "INSERT INTO federation_edu_outbox (destination, lane, edu_type, content)"
        " VALUES (?, ?, ?, ?)",
        [
            (d, lane, t, json.dumps(c, ensure_ascii=False, separators=(",", ":")))
            for d, t, c in rows
        ],
    )
    return due_destinations(conn, names, now_ms)


def outbox_edus(
    conn: sqlite3.Connection, destination: str, lane: int, limit: int
) -> list[OutboxEdu]:
    if limit <= 0:
        return []
    rows = conn.execute(
        "SELECT seq, edu_type, content FROM federation_edu_outbox"
        " WHERE destination = ? AND lane = ? ORDER BY seq LIMIT ?",
        (destination, lane, limit),
    )
    return [OutboxEdu(int(r[0]), str(r[1]), json.loads(r[2])) for r in rows]


def outbox_length(conn: sqlite3.Connection, destination: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM federation_edu_outbox WHERE destination = ?", (destination,)
    ).fetchone()
    return int(row[0])


# --- who is in a room -----------------------------------------------------------------


def _domain(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def joined_servers(conn: sqlite3.Connection, room_id: str) -> set[str]:
    """Servers of the room's joined members now (current state)."""
    rows = conn.execute(
        "SELECT state_key FROM current_state WHERE room_id = ? AND type = 'm.room.member'"
        " AND membership = 'join'",
        (room_id,),
    )
    return {_domain(str(r[0])) for r in rows}


def servers_sharing_a_room(conn: sqlite3.Connection, user_id: str) -> set[str]:
    """Servers with a member joined to any room ``user_id`` is joined to now."""
    rows = conn.execute(
        "SELECT DISTINCT o.state_key FROM current_state m JOIN current_state o"
        " ON o.room_id = m.room_id AND o.type = 'm.room.member' AND o.membership = 'join'"
        " WHERE m.type = 'm.room.member' AND m.state_key = ? AND m.membership = 'join'",
        (user_id,),
    )
    return {_domain(str(r[0])) for r in rows}
