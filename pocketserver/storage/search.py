"""The ``event_search`` FTS5 table: indexing event text and querying it.

Rows are keyed by the event's stream_ordering; ``key`` says which content field the
text came from. Queries join ``events`` so that only events of the graph (not
outliers, rejected or soft-failed) come back.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 16


def query_words(search_term: str) -> list[str]:
    """The words of a search term, lowercased, without duplicates (at most 16)."""
    seen: list[str] = []
    for word in _WORD.findall(search_term.lower()):
        if word not in seen:
            seen.append(word)
    return seen[:MAX_QUERY_WORDS]


def fts_query(words: Sequence[str]) -> str:
    """An FTS5 MATCH expression: every word, each as a quoted prefix (no operators
    from the user's text reach FTS5)."""
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words)


def index_text(conn: sqlite3.Connection, stream_ordering: int, key: str, text: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO event_search (rowid, body, key) VALUES (?, ?, ?)",
        (stream_ordering, text, key),
    )


def unindex_event(conn: sqlite3.Connection, event_id: str) -> None:
    row = conn.execute(
        "SELECT stream_ordering FROM events WHERE event_id = ?", (event_id,)
    ).fetchone()
    if row is not None:
        conn.execute("DELETE FROM event_search WHERE rowid = ?", (int(row[0]),))


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """``room_ids``: rooms searched whole; ``left_rooms``: (room, last stream position
    the user was in it) for rooms they have left, searched up to their leaving."""

    match: str
    keys: tuple[str, ...]
    room_ids: tuple[str, ...]
    left_rooms: tuple[tuple[str, int], ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.keys or not (self.room_ids or self.left_rooms)


@dataclass(frozen=True, slots=True)
class Hit:
    event_id: str
    room_id: str
    stream_ordering: int
    rank: float


def _where(q: SearchQuery) -> tuple[str, list[object]]:
    clauses = [
        "event_search MATCH ?",
        "e.outlier = 0 AND e.rejected IS NULL AND e.soft_failed = 0",
        f"s.key IN ({','.join('?' * len(q.keys))})",
    ]
    args: list[object] = [q.match, *q.keys]
    rooms = [f"e.room_id IN ({','.join('?' * len(q.room_ids))})"]
    args.extend(q.room_ids)
    for room_id, upto in q.left_rooms:
        rooms.append("(e.room_id = ? AND e.stream_ordering <= ?)")
        args.extend((room_id, upto))
    clauses.append("(" + " OR ".join(rooms) + ")")
    if q.senders is not None:
        clauses.append(f"e.sender IN ({','.join('?' * len(q.senders))})")
        args.extend(q.senders)
    if q.not_senders:
        clauses.append(f"e.sender NOT IN ({','.join('?' * len(q.not_senders))})")
        args.extend(q.not_senders)
    return " AND ".join(clauses), args


_FROM = "FROM event_search s JOIN events e ON e.stream_ordering = s.rowid"


def search_recent(
    conn: sqlite3.Connection, q: SearchQuery, before: int | None, limit: int
) -> list[Hit]:
    """Matches newest first, with stream_ordering below ``before`` (if given)."""
    if q.empty:
        return []
    where, args = _where(q)
    if before is not None:
        where += " AND s.rowid < ?"
        args.append(before)
    rows = conn.execute(
        f"SELECT e.event_id, e.room_id, e.stream_ordering, bm25(event_search) {_FROM}"
        f" WHERE {where} ORDER BY s.rowid DESC LIMIT ?",
        [*args, limit],
    )
    return [Hit(str(r[0]), str(r[1]), int(r[2]), -float(r[3])) for r in rows]


def search_ranked(conn: sqlite3.Connection, q: SearchQuery, offset: int, limit: int) -> list[Hit]:
    """Matches best first (FTS5's bm25: lower is better; the rank returned is its
    negation, so higher is closer as the spec wants)."""
    if q.empty:
        return []
    where, args = _where(q)
    rows = conn.execute(
        f"SELECT e.event_id, e.room_id, e.stream_ordering, bm25(event_search) AS r {_FROM}"
        f" WHERE {where} ORDER BY r, s.rowid DESC LIMIT ? OFFSET ?",
        [*args, limit, offset],
    )
    return [Hit(str(r[0]), str(r[1]), int(r[2]), -float(r[3])) for r in rows]


def count_matches(conn: sqlite3.Connection, q: SearchQuery) -> int:
    if q.empty:
        return 0
    where, args = _where(q)
    return int(conn.execute(f"SELECT count(*) {_FROM} WHERE {where}", args).fetchone()[0])


def room_events_around(
    conn: sqlite3.Connection, room_id: str, stream_ordering: int, before: int, after: int
) -> tuple[list[str], list[str]]:
    """Event IDs of the graph just before (newest first) and after (oldest first)."""
    visible = "outlier = 0 AND rejected IS NULL AND soft_failed = 0"
    earlier = conn.execute(
        f"SELECT event_id FROM events WHERE room_id = ? AND stream_ordering < ? AND {visible}"
        " ORDER BY stream_ordering DESC LIMIT ?",
        (room_id, stream_ordering, before),
    ).fetchall()
    later = conn.execute(
        f"SELECT event_id FROM events WHERE room_id = ? AND stream_ordering > ? AND {visible}"
        " ORDER BY stream_ordering LIMIT ?",
        (room_id, stream_ordering, after),
    ).fetchall()
    return [str(r[0]) for r in earlier], [str(r[0]) for r in later]


def rooms_ever_in(conn: sqlite3.Connection, user_id: str) -> list[tuple[str, int | None]]:
    """(room, None) for rooms the user is joined to, (room, position of their leave or
    ban) for rooms they left: search covers those up to the leaving, and visibility
    rules then decide per event."""
    rows = conn.execute(
        "SELECT c.room_id, c.membership, e.stream_ordering FROM current_state c"
        " JOIN events e ON e.event_id = c.event_id"
        " WHERE c.type = 'm.room.member' AND c.state_key = ?"
        " AND c.membership IN ('join', 'leave', 'ban')",
        (user_id,),
    )
    return [(str(r[0]), None if r[1] == "join" else int(r[2])) for r in rows]
