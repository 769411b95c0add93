"""The ``event_relations`` table: child events by parent, for /relations, /threads and
bundled aggregations (client-server API "Forming relationships between events").

A child counts only while it has not been redacted: an accepted redaction naming
it (the ``redactions`` table) breaks the relationship. Positions are stream
orderings; ``lo`` is an inclusive lower bound and ``hi`` an exclusive upper bound.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_NOT_REDACTED = "NOT EXISTS (SELECT 1 FROM redactions x WHERE x.redacts = r.event_id)"

MAX_REFERENCES = 100
"""Bundled ``m.reference`` chunks list at most this many children (newest kept)."""


@dataclass(frozen=True, slots=True)
class Relation:
    relates_to_id: str
    rel_type: str


def relation_of(pdu: Mapping[str, object]) -> Relation | None:
    """The relation an event's content declares, or None if it has none (or a
    malformed one: "Relationships which don't match the schema ... are ignored")."""
    content = pdu.get("content")
    rel = content.get("m.relates_to") if isinstance(content, Mapping) else None
    if not isinstance(rel, Mapping):
        return None
    rel_type, parent = rel.get("rel_type"), rel.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(parent, str) or not rel_type or not parent:
        return None
    return Relation(parent, rel_type)


def insert_relation(
    conn: sqlite3.Connection,
    event_id: str,
    room_id: str,
    pdu: Mapping[str, object],
    stream_ordering: int,
) -> None:
    """Index the relation of one event, if it declares one."""
    rel = relation_of(pdu)
    if rel is None:
        return
    content = pdu.get("content")
    new_content = isinstance(content, Mapping) and isinstance(content.get("m.new_content"), dict)
    ts = pdu.get("origin_server_ts")
    conn.execute(
        "INSERT OR REPLACE INTO event_relations (event_id, relates_to_id, rel_type, room_id,"
        " type, sender, is_state, new_content, origin_server_ts, stream_ordering)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event_id,
            rel.relates_to_id,
            rel.rel_type,
            room_id,
            str(pdu.get("type", "")),
            str(pdu.get("sender", "")),
            int(isinstance(pdu.get("state_key"), str)),
            int(new_content),
            ts if isinstance(ts, int) and not isinstance(ts, bool) else 0,
            stream_ordering,
        ),
    )


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def children(
    conn: sqlite3.Connection,
    room_id: str,
    parent_id: str,
    rel_type: str | None,
    event_type: str | None,
    lo: int,
    hi: int,
    forwards: bool,
    limit: int,
    depth: int = 1,
) -> list[tuple[str, int]]:
    """(event ID, stream ordering) of the children of ``parent_id`` with position in
    ``[lo, hi)``, newest first (oldest first if ``forwards``), at most ``limit``.

    With ``depth`` > 1, children of children are included down to that many levels;
    ``rel_type`` and ``event_type`` restrict every level, so an event related only
    through a non-matching intermediate is left out (client-server API
    "Relationships API").
    """
    where = ["r.room_id = ?", _NOT_REDACTED]
    args: list[object] = [room_id]
    if rel_type is not None:
        where.append("r.rel_type = ?")
        args.append(rel_type)
    if event_type is not None:
        where.append("r.type = ?")
        args.append(event_type)
    cond = " AND ".join(where)
    order = "ASC" if forwards else "DESC"
    rows = conn.execute(
        "WITH RECURSIVE related(event_id, stream_ordering, level) AS ("
        f" SELECT r.event_id, r.stream_ordering, 1 FROM event_relations r"
        f" WHERE r.relates_to_id = ? AND {cond}"
        " UNION"
        " SELECT r.event_id, r.stream_ordering, related.level + 1 FROM event_relations r"
        f" JOIN related ON r.relates_to_id = related.event_id WHERE related.level < ? AND {cond}"
        ")"
        " SELECT event_id, min(stream_ordering) AS so FROM related"
        " WHERE stream_ordering >= ? AND stream_ordering < ?"
        f" GROUP BY event_id ORDER BY so {order} LIMIT ?",
        [parent_id, *args, depth, *args, lo, hi, limit],
    )
    return [(str(r[0]), int(r[1])) for r in rows]


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    count: int
    latest_id: str
    participated: bool


@dataclass(frozen=True, slots=True)
class AggregationRows:
    """What bundled aggregations need for a set of parents, read in one transaction."""

    threads: dict[str, ThreadSummary]
    edits: dict[str, str]
    references: dict[str, list[str]]
    joined_rooms: frozenset[str]


def aggregation_rows(
    conn: sqlite3.Connection,
    parent_ids: Sequence[str],
    user_id: str,
    ignored: Sequence[str],
    room_ids: Sequence[str],
) -> AggregationRows:
    """Thread summaries, latest valid edits and references of ``parent_ids``, leaving
    out children sent by ``ignored`` users; and which of ``room_ids`` the user is
    joined to now (for history visibility)."""
    threads: dict[str, ThreadSummary] = {}
    edits: dict[str, str] = {}
    references: dict[str, list[str]] = {}
    not_ignored = f" AND r.sender NOT IN ({_marks(ignored)})" if ignored else ""
    for i in range(0, len(parent_ids), 200):
        chunk = list(parent_ids[i : i + 200])
        marks = _marks(chunk)
        # SQLite: with one max() (and no other min/max), bare columns come from its row.
        for parent, count, latest, _, participated in conn.execute(
            "SELECT r.relates_to_id, count(*), r.event_id, max(r.stream_ordering),"
            " total(r.sender = ?) FROM event_relations r"
            f" WHERE r.relates_to_id IN ({marks}) AND r.rel_type = 'm.thread'"
            f" AND {_NOT_REDACTED}{not_ignored} GROUP BY r.relates_to_id",
            [user_id, *chunk, *ignored],
        ):
            threads[str(parent)] = ThreadSummary(int(count), str(latest), bool(participated))
        # event_replacements.md "Validity of replacement events" and "Server-side
        # aggregation": same sender and type, no state events, m.new_content present
        # (in cleartext unless encrypted); the newest by origin_server_ts, then event ID.
        for parent, edit in conn.execute(
            "SELECT p.event_id, (SELECT r.event_id FROM event_relations r"
            " WHERE r.relates_to_id = p.event_id AND r.rel_type = 'm.replace'"
            " AND r.room_id = p.room_id AND r.sender = p.sender AND r.type = p.type"
            " AND r.is_state = 0 AND (r.new_content = 1 OR r.type = 'm.room.encrypted')"
            f" AND {_NOT_REDACTED} ORDER BY r.origin_server_ts DESC, r.event_id DESC LIMIT 1)"
            f" FROM events p WHERE p.event_id IN ({marks}) AND p.state_key IS NULL",
            chunk,
        ):
            if edit is not None:
                edits[str(parent)] = str(edit)
        for parent, child in conn.execute(
            "SELECT relates_to_id, event_id FROM (SELECT r.relates_to_id, r.event_id,"
            " r.stream_ordering, row_number() OVER (PARTITION BY r.relates_to_id"
            " ORDER BY r.stream_ordering DESC) AS n FROM event_relations r"
            f" WHERE r.relates_to_id IN ({marks}) AND r.rel_type = 'm.reference'"
            f" AND {_NOT_REDACTED}{not_ignored})"
            " WHERE n <= ? ORDER BY stream_ordering",
            [*chunk, *ignored, MAX_REFERENCES],
        ):
            references.setdefault(str(parent), []).append(str(child))
    joined: set[str] = set()
    for i in range(0, len(room_ids), 200):
        rooms = list(room_ids[i : i + 200])
        joined.update(
            str(r[0])
            for r in conn.execute(
                "SELECT room_id FROM current_state WHERE type = 'm.room.member'"
                f" AND state_key = ? AND membership = 'join' AND room_id IN ({_marks(rooms)})",
                [user_id, *rooms],
            )
        )
    return AggregationRows(threads, edits, references, frozenset(joined))


def thread_roots(
    conn: sqlite3.Connection,
    room_id: str,
    hi: int,
    limit: int,
    participant: str | None,
) -> list[tuple[str, int]]:
    """(root event ID, position of its latest reply) of the room's threads whose latest
    reply is before ``hi``, most recently active first. With ``participant``, only
    threads that user started or replied to."""
    having = "latest < ?"
    args: list[object] = [room_id, hi]
    if participant is not None:
        having += (
            " AND (max(r.sender = ?) OR EXISTS (SELECT 1 FROM events e"
            " WHERE e.event_id = r.relates_to_id AND e.sender = ?))"
        )
        args += [participant, participant]
    rows = conn.execute(
        "SELECT r.relates_to_id, max(r.stream_ordering) AS latest FROM event_relations r"
        f" WHERE r.room_id = ? AND r.rel_type = 'm.thread' AND {_NOT_REDACTED}"
        f" GROUP BY r.relates_to_id HAVING {having} ORDER BY latest DESC LIMIT ?",
        [*args, limit],
    )
    return [(str(r[0]), int(r[1])) for r in rows]


def has_annotation(
    conn: sqlite3.Connection, parent_id: str, sender: str, event_type: str, key: str
) -> bool:
    """Whether ``sender`` already annotated ``parent_id`` with this type and key (and
    that annotation was not redacted)."""
    row = conn.execute(
        "SELECT 1 FROM event_relations r JOIN events e ON e.event_id = r.event_id"
        " WHERE r.relates_to_id = ? AND r.rel_type = 'm.annotation' AND r.sender = ?"
        " AND r.type = ? AND json_extract(e.json, '$.content.\"m.relates_to\".key') = ?"
        f" AND {_NOT_REDACTED} LIMIT 1",
        (parent_id, sender, event_type, key),
    ).fetchone()
    return row is not None
