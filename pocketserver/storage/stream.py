"""Stream queries for sync and pagination: what happened in which rooms, in order.

Only events that are part of the visible room graph count: not outliers, not
rejected, not soft-failed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

_VISIBLE = "outlier = 0 AND rejected IS NULL AND soft_failed = 0"


@dataclass(frozen=True, slots=True)
class Membership:
    room_id: str
    membership: str
    event_id: str
    stream_ordering: int
    out_of_band: bool = False
    """An invite, knock or their withdrawal in a room this server does not hold
    (storage/out_of_band.py): no timeline or state here, only the member event."""


def current_memberships(conn: sqlite3.Connection, user_id: str) -> list[Membership]:
    """The user's membership in every room where the server has one: from current
    state, or an out-of-band membership when it is newer (an invite to a room we left
    long ago; a join through the room later replaces the out-of-band invite)."""
    rows = conn.execute(
        "SELECT c.room_id, c.membership, c.event_id, e.stream_ordering FROM current_state c"
        " JOIN events e ON e.event_id = c.event_id"
        " WHERE c.type = 'm.room.member' AND c.state_key = ?",
        (user_id,),
    )
    found = {str(r[0]): Membership(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows}
    for r in conn.execute(
        "SELECT room_id, membership, event_id, stream_ordering FROM out_of_band_memberships"
        " WHERE user_id = ?",
        (user_id,),
    ):
        known = found.get(str(r[0]))
        if known is None or known.stream_ordering < int(r[3]):
            found[str(r[0])] = Membership(str(r[0]), str(r[1]), str(r[2]), int(r[3]), True)
    return list(found.values())


def membership_changes(
    conn: sqlite3.Connection, user_id: str, after: int, upto: int
) -> list[Membership]:
    """The user's membership events with stream position in ``(after, upto]``, in order."""
    rows = conn.execute(
        "SELECT room_id, json_extract(json, '$.content.membership'), event_id, stream_ordering"
        " FROM events WHERE type = 'm.room.member' AND state_key = ?"
        f" AND stream_ordering > ? AND stream_ordering <= ? AND {_VISIBLE}"
        " ORDER BY stream_ordering",
        (user_id, after, upto),
    )
    changes = [Membership(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]
    out_of_band = conn.execute(
        "SELECT room_id, membership, event_id, stream_ordering FROM out_of_band_memberships"
        " WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ?",
        (user_id, after, upto),
    ).fetchall()
    if not out_of_band:
        return changes
    changes += [Membership(str(r[0]), str(r[1]), str(r[2]), int(r[3]), True) for r in out_of_band]
    return sorted(changes, key=lambda m: m.stream_ordering)


def rooms_with_events(
    conn: sqlite3.Connection, room_ids: Sequence[str], after: int, upto: int
) -> set[str]:
    """Which of ``room_ids`` have visible events with position in ``(after, upto]``."""
    found: set[str] = set()
    for i in range(0, len(room_ids), 500):
        chunk = list(room_ids[i : i + 500])
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT DISTINCT room_id FROM events WHERE room_id IN ({marks})"
            f" AND stream_ordering > ? AND stream_ordering <= ? AND {_VISIBLE}",
            [*chunk, after, upto],
        )
        found.update(str(r[0]) for r in rows)
    return found


def _glob(pattern: str) -> str:
    """A filter pattern (only ``*`` is a wildcard) as an SQLite GLOB pattern."""
    return "".join("*" if c == "*" else f"[{c}]" if c in "?[]" else c for c in pattern)


@dataclass(frozen=True, slots=True)
class EventConditions:
    """A RoomEventFilter's type/sender/url parts, evaluated in SQL so that a limit
    counts only matching events."""

    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    contains_url: bool | None = None

    def sql(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        if self.types is not None:
            if not self.types:
                return " AND 0", []
            clauses.append("(" + " OR ".join("type GLOB ?" for _ in self.types) + ")")
            args.extend(_glob(t) for t in self.types)
        for t in self.not_types:
            clauses.append("type NOT GLOB ?")
            args.append(_glob(t))
        if self.senders is not None:
            if not self.senders:
                return " AND 0", []
            clauses.append(f"sender IN ({','.join('?' * len(self.senders))})")
            args.extend(self.senders)
        if self.not_senders:
            clauses.append(f"sender NOT IN ({','.join('?' * len(self.not_senders))})")
            args.extend(self.not_senders)
        if self.contains_url is not None:
            test = "IS NOT NULL" if self.contains_url else "IS NULL"
            clauses.append(f"json_extract(json, '$.content.url') {test}")
        return "".join(f" AND {c}" for c in clauses), args


def recent_event_ids(
    conn: sqlite3.Connection,
    room_id: str,
    after: int,
    upto: int,
    limit: int,
    conditions: EventConditions | None = None,
) -> tuple[list[str], bool]:
    """The last ``limit`` visible events of a room with position in ``(after, upto]``
    (matching ``conditions``), oldest first, and whether there were more (the
    timeline is "limited")."""
    extra, args = (conditions or EventConditions()).sql()
    rows = conn.execute(
        "SELECT event_id FROM events WHERE room_id = ? AND stream_ordering > ?"
        f" AND stream_ordering <= ? AND {_VISIBLE}{extra}"
        " ORDER BY stream_ordering DESC LIMIT ?",
        (room_id, after, upto, *args, limit + 1),
    ).fetchall()
    limited = len(rows) > limit
    return [str(r[0]) for r in reversed(rows[:limit])], limited


def recent_event_ids_many(
    conn: sqlite3.Connection,
    rooms: Sequence[tuple[str, int]],
    upto: int,
    limit: int,
    conditions: EventConditions | None = None,
) -> dict[str, tuple[list[str], bool]]:
    """:func:`recent_event_ids` for several (room, after) pairs in one call."""
    return {
        room_id: recent_event_ids(conn, room_id, after, upto, limit, conditions)
        for room_id, after in rooms
    }


def room_summaries(
    conn: sqlite3.Connection, room_ids: Sequence[str], user_id: str
) -> dict[str, dict[str, object]]:
    """The sync ``summary`` (heroes, joined and invited counts) of several rooms."""
    result: dict[str, dict[str, object]] = {}
    for room_id in room_ids:
        counts = member_counts(conn, room_id)
        summary: dict[str, object] = {
            "m.joined_member_count": counts.get("join", 0),
            "m.invited_member_count": counts.get("invite", 0),
        }
        if not has_name_or_alias(conn, room_id):
            summary["m.heroes"] = room_heroes(conn, room_id, user_id)
        result[room_id] = summary
    return result


def has_name_or_alias(conn: sqlite3.Connection, room_id: str) -> bool:
    """Whether the room has a non-empty ``m.room.name`` or ``m.room.canonical_alias``.

    sync.yaml (RoomSummary ``m.heroes``): heroes are required when both are unset or
    empty; for a named room they are left out, as Synapse does (clients show the name)."""
    row = conn.execute(
        "SELECT 1 FROM current_state c JOIN events e ON e.event_id = c.event_id"
        " WHERE c.room_id = ? AND c.state_key = ''"
        " AND ((c.type = 'm.room.name' AND json_extract(e.json, '$.content.name') != '')"
        " OR (c.type = 'm.room.canonical_alias'"
        " AND json_extract(e.json, '$.content.alias') != ''))"
        " AND e.event_id NOT IN (SELECT redacts FROM redactions)"
        " LIMIT 1",
        (room_id,),
    ).fetchone()
    return row is not None


def stream_position_of(conn: sqlite3.Connection, event_id: str) -> int | None:
    row = conn.execute(
        "SELECT stream_ordering FROM events WHERE event_id = ?", (event_id,)
    ).fetchone()
    return int(row[0]) if row else None


def last_event_before(conn: sqlite3.Connection, room_id: str, upto: int) -> str | None:
    """The last visible event of a room at or before position ``upto``."""
    row = conn.execute(
        f"SELECT event_id FROM events WHERE room_id = ? AND stream_ordering <= ? AND {_VISIBLE}"
        " ORDER BY stream_ordering DESC LIMIT 1",
        (room_id, upto),
    ).fetchone()
    return str(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class SyncSnapshot:
    """Everything /sync needs to decide what to send, read in one transaction."""

    upto: int
    memberships: list[Membership]
    changes: list[Membership]
    rooms_with_events: set[str]


def sync_snapshot(conn: sqlite3.Connection, user_id: str, since: int | None) -> SyncSnapshot:
    row = conn.execute("SELECT max(stream_ordering) FROM events").fetchone()
    upto = int(row[0] or 0)
    memberships = current_memberships(conn, user_id)
    if since is None:
        return SyncSnapshot(upto, memberships, [], set())
    changes = membership_changes(conn, user_id, since, upto)
    rooms = [m.room_id for m in memberships if m.membership == "join"]
    return SyncSnapshot(upto, memberships, changes, rooms_with_events(conn, rooms, since, upto))


def member_counts(conn: sqlite3.Connection, room_id: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT membership, count(*) FROM current_state"
        " WHERE room_id = ? AND type = 'm.room.member' GROUP BY membership",
        (room_id,),
    )
    return {str(m): int(n) for m, n in rows}


def room_heroes(conn: sqlite3.Connection, room_id: str, user_id: str, limit: int = 5) -> list[str]:
    """Up to ``limit`` other joined or invited members, for rooms without a name."""
    rows = conn.execute(
        "SELECT state_key FROM current_state WHERE room_id = ? AND type = 'm.room.member'"
        " AND membership IN ('join', 'invite') AND state_key != ? ORDER BY state_key LIMIT ?",
        (room_id, user_id, limit),
    )
    return [str(r[0]) for r in rows]
