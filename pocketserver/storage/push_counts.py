"""Unread notification counters and each user's recent notifications.

See ``schema/009_push.sql``. Counters are one row per (user, room, thread), where
``thread_id`` is ``main`` for the main timeline or the thread root's event ID. Each
row also remembers the newest notification it counted (``last_stream``) and how far
the user has read (``read_stream``), so that:

- a notification at or before ``read_stream`` is not counted (the receipt won);
- a read marker at or past ``last_stream`` sets the counts to zero;
- a read marker in the middle (the user read an older event while newer ones
  notified) recounts from the recent-notifications list. That list keeps the last
  :data:`RECENT_PER_USER` notifications of each user, so a recount is exact unless
  more than that many notifications of the user are newer than the read marker;
  then it counts only those still listed (an undercount, never an overcount).

Trimming a user's list costs a walk over it, so :func:`apply` may be told to trim
only some users (the evaluator trims each user every few dozen notifications): older
rows can stay for a while, and every read here sees only each user's newest
:data:`RECENT_PER_USER`, exactly the rows that trimming after every insert keeps.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

MAIN_THREAD = "main"
RECENT_PER_USER = 100
# The user's RECENT_PER_USER-th newest notification (0 when they have fewer): rows
# older than this are kept only until the next trim, and reads skip them.
_LISTED_FROM = (
    "coalesce((SELECT stream_ordering FROM push_notifications WHERE user_id = ?"
    f" ORDER BY stream_ordering DESC LIMIT 1 OFFSET {RECENT_PER_USER - 1}), 0)"
)


@dataclass(frozen=True, slots=True)
class Notify:
    """The user was notified about an event."""

    user_id: str
    room_id: str
    thread_id: str
    stream_ordering: int
    event_id: str
    actions: list[object]
    highlight: bool
    ts: int
    actions_json: str | None = None
    """``actions`` as stored (compact JSON), when the caller has it already."""


@dataclass(frozen=True, slots=True)
class ReadUpTo:
    """The user has read a room (``thread_id`` None: every thread) up to a position."""

    user_id: str
    room_id: str
    thread_id: str | None
    stream_ordering: int


@dataclass(frozen=True, slots=True)
class StoredNotification:
    user_id: str
    stream_ordering: int
    room_id: str
    event_id: str
    thread_id: str
    actions: list[object]
    highlight: bool
    ts: int
    read: bool


Counts = dict[str, dict[str, tuple[int, int]]]
"""room_id -> thread_id -> (notification_count, highlight_count)."""


def actions_json(actions: list[object] | tuple[object, ...]) -> str:
    """Actions as the recent-notifications list stores them."""
    return json.dumps(list(actions), separators=(",", ":"))


def apply(
    conn: sqlite3.Connection,
    ops: Iterable[Notify | ReadUpTo],
    trim: Collection[str] | None = None,
) -> None:
    """Apply notifications and read markers in order, in the caller's transaction.

    Consecutive notifications are written together (a few ``executemany`` calls); what
    the reads here return is the same as after applying them one by one.

    Args:
        conn: The write connection.
        ops: Notifications and read markers, in stream order.
        trim: Whose recent lists to trim down to :data:`RECENT_PER_USER` (None: every
            user notified by ``ops``).
    """
    run: list[Notify] = []
    notified: set[str] = set()
    for op in ops:
        if isinstance(op, Notify):
            run.append(op)
            notified.add(op.user_id)
            continue
        if run:
            _notify_many(conn, run)
            run = []
        _read_up_to(conn, op)
    if run:
        _notify_many(conn, run)
    if trim is None:
        trim = notified
    conn.executemany(
        "DELETE FROM push_notifications WHERE user_id = ?1 AND stream_ordering <"
        " (SELECT stream_ordering FROM push_notifications WHERE user_id = ?1"
        "  ORDER BY stream_ordering DESC LIMIT 1 OFFSET ?2)",
        [(user_id, RECENT_PER_USER - 1) for user_id in sorted(trim)],
    )


def _notify_many(conn: sqlite3.Connection, ops: Sequence[Notify]) -> None:
    # A notification at or before the row's read_stream is not counted (already read).
    # The recent list is written first, while read_stream is what the check needs.
    conn.executemany(
        "INSERT OR IGNORE INTO push_notifications (user_id, stream_ordering, room_id, event_id,"
        " thread_id, actions_json, highlight, ts)"
        " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE NOT EXISTS (SELECT 1 FROM push_counts"
        "  WHERE user_id = ?1 AND room_id = ?3 AND thread_id = ?5 AND read_stream >= ?2)",
        [
            (
                op.user_id,
                op.stream_ordering,
                op.room_id,
                op.event_id,
                op.thread_id,
                op.actions_json or actions_json(op.actions),
                int(op.highlight),
                op.ts,
            )
            for op in ops
        ],
    )
    conn.executemany(
        "INSERT INTO push_counts (user_id, room_id, thread_id, notification_count,"
        " highlight_count, last_stream) VALUES (?, ?, ?, 1, ?, ?)"
        " ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET"
        " notification_count = notification_count + 1,"
        " highlight_count = highlight_count + excluded.highlight_count,"
        " last_stream = max(last_stream, excluded.last_stream)"
        " WHERE excluded.last_stream > push_counts.read_stream",
        [
            (op.user_id, op.room_id, op.thread_id, int(op.highlight), op.stream_ordering)
            for op in ops
        ],
    )


def _read_up_to(conn: sqlite3.Connection, op: ReadUpTo) -> None:
    if op.thread_id is None:
        threads = [
            str(r[0])
            for r in conn.execute(
                "SELECT thread_id FROM push_counts WHERE user_id = ? AND room_id = ?",
                (op.user_id, op.room_id),
            )
        ]
        if MAIN_THREAD not in threads:
            threads.append(MAIN_THREAD)
    else:
        threads = [op.thread_id]
    for thread_id in threads:
        _read_thread(conn, op.user_id, op.room_id, thread_id, op.stream_ordering)


def _read_thread(
    conn: sqlite3.Connection, user_id: str, room_id: str, thread_id: str, position: int
) -> None:
    key = (user_id, room_id, thread_id)
    row = conn.execute(
        "SELECT last_stream, read_stream FROM push_counts"
        " WHERE user_id = ? AND room_id = ? AND thread_id = ?",
        key,
    ).fetchone()
    if row is not None and position <= int(row[1]):
        return  # a receipt behind the one we have changes nothing
    conn.execute(
        "UPDATE push_notifications SET read = 1 WHERE user_id = ? AND room_id = ?"
        " AND thread_id = ? AND stream_ordering <= ? AND read = 0",
        (user_id, room_id, thread_id, position),
    )
    if row is None:
        conn.execute(
            "INSERT INTO push_counts (user_id, room_id, thread_id, read_stream)"
            " VALUES (?, ?, ?, ?)",
            (*key, position),
        )
        return
    if position >= int(row[0]):
        counts = (0, 0)
    else:
        found = conn.execute(
            "SELECT count(*), coalesce(sum(highlight), 0) FROM push_notifications"
            " WHERE user_id = ? AND room_id = ? AND thread_id = ? AND stream_ordering > ?"
            f" AND stream_ordering >= {_LISTED_FROM}",
            (*key, position, user_id),
        ).fetchone()
        counts = (int(found[0]), int(found[1]))
    conn.execute(
        "UPDATE push_counts SET notification_count = ?, highlight_count = ?, read_stream = ?"
        " WHERE user_id = ? AND room_id = ? AND thread_id = ?",
        (*counts, position, *key),
    )


def counts_for_rooms(conn: sqlite3.Connection, user_id: str, room_ids: Sequence[str]) -> Counts:
    """The user's non-zero counters in ``room_ids``, by room and thread."""
    result: Counts = {}
    for i in range(0, len(room_ids), 500):
        chunk = list(room_ids[i : i + 500])
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT room_id, thread_id, notification_count, highlight_count FROM push_counts"
            f" WHERE user_id = ? AND room_id IN ({marks})"
            " AND (notification_count > 0 OR highlight_count > 0)",
            [user_id, *chunk],
        )
        for room_id, thread_id, notifications, highlights in rows:
            result.setdefault(str(room_id), {})[str(thread_id)] = (
                int(notifications),
                int(highlights),
            )
    return result


def recent_notifications(
    conn: sqlite3.Connection,
    user_id: str,
    before: int | None,
    limit: int,
    only_highlight: bool = False,
) -> list[StoredNotification]:
    """The user's notifications newest first, those older than ``before`` if given."""
    sql = (
        "SELECT stream_ordering, room_id, event_id, thread_id, actions_json, highlight, ts, read"
        f" FROM push_notifications WHERE user_id = ? AND stream_ordering >= {_LISTED_FROM}"
    )
    args: list[object] = [user_id, user_id]
    if before is not None:
        sql += " AND stream_ordering < ?"
        args.append(before)
    if only_highlight:
        sql += " AND highlight = 1"
    sql += " ORDER BY stream_ordering DESC LIMIT ?"
    args.append(limit)
    result = []
    for stream, room_id, event_id, thread_id, actions_json, highlight, ts, read in conn.execute(
        sql, args
    ):
        actions = json.loads(actions_json)
        result.append(
            StoredNotification(
                user_id=user_id,
                stream_ordering=int(stream),
                room_id=str(room_id),
                event_id=str(event_id),
                thread_id=str(thread_id),
                actions=actions if isinstance(actions, list) else [],
                highlight=bool(highlight),
                ts=int(ts),
                read=bool(read),
            )
        )
    return result


def joined_members(conn: sqlite3.Connection, room_id: str) -> list[tuple[str, str]]:
    """``(user_id, member event ID)`` of every member joined to the room now."""
    rows = conn.execute(
        "SELECT state_key, event_id FROM current_state WHERE room_id = ?"
        " AND type = 'm.room.member' AND membership = 'join'",
        (room_id,),
    )
    return [(str(r[0]), str(r[1])) for r in rows]
