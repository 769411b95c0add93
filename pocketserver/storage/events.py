"""The ``events`` table and the DAG around it: edges, auth edges, extremities, redactions.

Stream orderings: live events and outliers take the next positive position (the
``AUTOINCREMENT`` key, in commit order: what /sync reads past its token). Backfilled
history takes *negative* positions below every event stored so far (the room writer
hands them out from :func:`lowest_ordering`, counting down), so it never shows past
any sync token and sorts before everything live; /messages orders by
``(depth, stream_ordering)`` (rooms/history.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pocketserver.core.crypto import encode_canonical_json
from pocketserver.storage import auth_chain_queries, auth_chains


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event row: the PDU and what the server decided about it."""

    event_id: str
    room_id: str
    stream_ordering: int
    pdu: dict[str, object]
    depth: int
    outlier: bool
    soft_failed: bool
    rejected: str | None
    state_before: int | None
    state_after: int | None

    @property
    def type(self) -> str:
        return str(self.pdu["type"])

    @property
    def state_key(self) -> str | None:
        sk = self.pdu.get("state_key")
        return sk if isinstance(sk, str) else None


_COLUMNS = (
    "event_id, room_id, stream_ordering, json, depth, outlier, soft_failed, rejected,"
    " state_before, state_after"
)


def _row(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(
        event_id=str(row[0]),
        room_id=str(row[1]),
        stream_ordering=int(row[2]),
        pdu=json.loads(str(row[3])),
        depth=int(row[4]),
        outlier=bool(row[5]),
        soft_failed=bool(row[6]),
        rejected=row[7] if row[7] is None else str(row[7]),
        state_before=None if row[8] is None else int(row[8]),
        state_after=None if row[9] is None else int(row[9]),
    )


def insert_room(
    conn: sqlite3.Connection, room_id: str, room_version: str, creator: str | None, now_ms: int
) -> None:
    conn.execute(
        "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (?, ?, ?, ?)",
        (room_id, room_version, creator, now_ms),
    )


def get_room_version(conn: sqlite3.Connection, room_id: str) -> str | None:
    row = conn.execute("SELECT room_version FROM rooms WHERE room_id = ?", (room_id,)).fetchone()
    return str(row[0]) if row else None


def insert_event(
    conn: sqlite3.Connection,
    event_id: str,
    room_id: str,
    pdu: dict[str, object],
    *,
    depth: int,
    prev_ids: Sequence[str],
    auth_ids: Sequence[str],
    received_ms: int,
    outlier: bool = False,
    soft_failed: bool = False,
    rejected: str | None = None,
    state_before: int | None = None,
    state_after: int | None = None,
    stream_ordering: int | None = None,
) -> int:
    """Insert an event with its edges; return its stream ordering (``stream_ordering``
    if given: a backfilled event's, negative).

    ``room_id`` is separate from the PDU: a v12 create event carries none.
    """
    state_key = pdu.get("state_key")
    cur = conn.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
        " depth, origin_server_ts, received_ts, json, outlier, soft_failed, rejected,"
        " state_before, state_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            stream_ordering,
            event_id,
            room_id,
            pdu["type"],
            state_key if isinstance(state_key, str) else None,
            pdu["sender"],
            depth,
            pdu.get("origin_server_ts", 0),
            received_ms,
            encode_canonical_json(pdu).decode("utf-8"),
            int(outlier),
            int(soft_failed),
            rejected,
            state_before,
            state_after,
        ),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO event_edges (event_id, prev_event_id) VALUES (?, ?)",
        [(event_id, p) for p in prev_ids],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO event_auth (event_id, auth_id) VALUES (?, ?)",
        [(event_id, a) for a in auth_ids],
    )
    if isinstance(state_key, str):
        auth_chains.index_event(conn, event_id, room_id, (str(pdu["type"]), state_key), auth_ids)
    return int(cur.lastrowid or 0)


def de_outlier_event(
    conn: sqlite3.Connection,
    event_id: str,
    *,
    soft_failed: bool,
    rejected: str | None,
    state_before: int | None,
    state_after: int | None,
    stream_ordering: int | None = None,
) -> int:
    """Give an outlier its state (it is now part of the room's graph); return its new
    stream ordering: the end of the stream, where sync will see it, or the given one
    (a backfilled event's, below everything)."""
    row = conn.execute("SELECT * FROM events WHERE event_id = ?", (event_id,)).fetchone()
    conn.execute("DELETE FROM events WHERE event_id = ?", (event_id,))
    cur = conn.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
        " depth, origin_server_ts, received_ts, json, outlier, soft_failed, rejected,"
        " state_before, state_after, censored)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
        (
            stream_ordering,
            row["event_id"],
            row["room_id"],
            row["type"],
            row["state_key"],
            row["sender"],
            row["depth"],
            row["origin_server_ts"],
            row["received_ts"],
            row["json"],
            int(soft_failed),
            rejected,
            state_before,
            state_after,
            row["censored"],
        ),
    )
    return int(cur.lastrowid or 0)


def get_event(conn: sqlite3.Connection, event_id: str) -> StoredEvent | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM events WHERE event_id = ?", (event_id,)).fetchone()
    return _row(row) if row else None


def get_events(conn: sqlite3.Connection, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
    """The stored events among ``event_ids`` (missing ones are absent from the result)."""
    ids = list(dict.fromkeys(event_ids))
    found: dict[str, StoredEvent] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE event_id IN ({marks})", chunk
        ):
            ev = _row(row)
            found[ev.event_id] = ev
    return found


def stored_event_ids(conn: sqlite3.Connection, event_ids: Iterable[str]) -> set[str]:
    """Which of ``event_ids`` are stored (without reading them: a join's state of tens
    of thousands of events is checked this way)."""
    ids = list(dict.fromkeys(event_ids))
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        found.update(
            r[0]
            for r in conn.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
        )
    return found


def memberships_of(conn: sqlite3.Connection, event_ids: Iterable[str]) -> dict[str, str]:
    """``event_id -> content.membership`` of the stored member events among
    ``event_ids``, read in SQL (nothing parsed or cached: a big room's first state)."""
    ids = list(dict.fromkeys(event_ids))
    found: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for eid, membership in conn.execute(
            "SELECT event_id, json_extract(json, '$.content.membership') FROM events"
            f" WHERE event_id IN ({marks})",
            chunk,
        ):
            if isinstance(membership, str):
                found[eid] = membership
    return found


def unknown_event_ids(conn: sqlite3.Connection, event_ids: Iterable[str]) -> list[str]:
    """The IDs among ``event_ids`` of no stored event (checked without reading them)."""
    ids = list(dict.fromkeys(event_ids))
    known = stored_event_ids(conn, ids)
    return [e for e in ids if e not in known]


def get_create_event_id(conn: sqlite3.Connection, room_id: str) -> str | None:
    """The accepted ``m.room.create`` event of a room, if known (as an outlier or not)."""
    row = conn.execute(
        "SELECT event_id FROM events WHERE room_id = ? AND type = 'm.room.create'"
        " AND state_key = '' AND rejected IS NULL ORDER BY stream_ordering LIMIT 1",
        (room_id,),
    ).fetchone()
    return str(row[0]) if row else None


def get_forward_extremities(conn: sqlite3.Connection, room_id: str) -> list[tuple[str, int]]:
    """(event_id, depth) of each forward extremity, deepest first."""
    rows = conn.execute(
        "SELECT f.event_id, e.depth FROM forward_extremities f"
        " JOIN events e ON e.event_id = f.event_id WHERE f.room_id = ?"
        " ORDER BY e.depth DESC, e.stream_ordering DESC",
        (room_id,),
    )
    return [(str(r[0]), int(r[1])) for r in rows]


def get_forward_extremities_ordered(
    conn: sqlite3.Connection, room_id: str
) -> list[tuple[str, int, int]]:
    """(event_id, depth, stream ordering) of each forward extremity, deepest first (the
    order of :func:`get_forward_extremities`)."""
    rows = conn.execute(
        "SELECT f.event_id, e.depth, e.stream_ordering FROM forward_extremities f"
        " JOIN events e ON e.event_id = f.event_id WHERE f.room_id = ?"
        " ORDER BY e.depth DESC, e.stream_ordering DESC",
        (room_id,),
    )
    return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]


def set_forward_extremities(
    conn: sqlite3.Connection, room_id: str, removed: Iterable[str], added: Iterable[str]
) -> None:
    conn.executemany(
        "DELETE FROM forward_extremities WHERE room_id = ? AND event_id = ?",
        [(room_id, e) for e in removed],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO forward_extremities (room_id, event_id) VALUES (?, ?)",
        [(room_id, e) for e in added],
    )


def has_children(conn: sqlite3.Connection, event_id: str) -> bool:
    """True if some accepted, non-outlier event names ``event_id`` as a prev event."""
    row = conn.execute(
        "SELECT 1 FROM event_edges x JOIN events e ON e.event_id = x.event_id"
        " WHERE x.prev_event_id = ? AND e.outlier = 0 AND e.rejected IS NULL"
        " AND e.soft_failed = 0 LIMIT 1",
        (event_id,),
    ).fetchone()
    return row is not None


def get_auth_chain_ids(conn: sqlite3.Connection, event_ids: Iterable[str]) -> set[str]:
    """Every event reachable from ``event_ids`` through auth edges (not including them),
    answered from the auth-chain index (:mod:`pocketserver.storage.auth_chain_queries`)."""
    return auth_chain_queries.get_auth_chain_ids(conn, event_ids)


def oldest_first(conn: sqlite3.Connection, event_ids: Iterable[str]) -> list[str]:
    """``event_ids`` ordered by depth, then by when they were stored (unknown IDs last,
    by ID): a room's older state comes before what replaced it."""
    ids = list(dict.fromkeys(event_ids))
    keys: dict[str, tuple[int, int]] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for event_id, depth, ordering in conn.execute(
            f"SELECT event_id, depth, stream_ordering FROM events WHERE event_id IN ({marks})",
            chunk,
        ):
            keys[event_id] = (int(depth), int(ordering))
    unknown = (2**62, 2**62)
    return sorted(ids, key=lambda e: (keys.get(e, unknown), e))


def insert_redaction(conn: sqlite3.Connection, event_id: str, redacts: str, now_ms: int) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO redactions (event_id, redacts, received_ts) VALUES (?, ?, ?)",
        (event_id, redacts, now_ms),
    )


def get_redactions_of(conn: sqlite3.Connection, event_ids: Iterable[str]) -> dict[str, list[str]]:
    """For each event in ``event_ids`` that has redactions, the redaction event IDs
    (accepted, non-soft-failed redactions only)."""
    ids = list(dict.fromkeys(event_ids))
    result: dict[str, list[str]] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for redacts, redaction_id in conn.execute(
            f"SELECT r.redacts, r.event_id FROM redactions r JOIN events e"
            f" ON e.event_id = r.event_id WHERE r.redacts IN ({marks})"
            f" AND e.rejected IS NULL AND e.soft_failed = 0 ORDER BY e.stream_ordering",
            chunk,
        ):
            result.setdefault(redacts, []).append(redaction_id)
    return result


def censor_event(conn: sqlite3.Connection, event_id: str, redacted_pdu: dict[str, object]) -> None:
    """Replace the stored JSON of a redacted event by its redacted form, for good."""
    conn.execute(
        "UPDATE events SET json = ?, censored = 1 WHERE event_id = ?",
        (encode_canonical_json(redacted_pdu).decode("utf-8"), event_id),
    )


def redactions_due_for_censoring(
    conn: sqlite3.Connection, before_ms: int, limit: int = 100
) -> list[tuple[str, str]]:
    """(redacted event ID, redaction ID) pairs older than ``before_ms`` not yet censored."""
    rows = conn.execute(
        "SELECT r.redacts, r.event_id FROM redactions r"
        " JOIN events e ON e.event_id = r.redacts"
        " JOIN events red ON red.event_id = r.event_id"
        " WHERE r.received_ts < ? AND e.censored = 0 AND red.rejected IS NULL"
        " AND red.soft_failed = 0 LIMIT ?",
        (before_ms, limit),
    )
    return [(str(a), str(b)) for a, b in rows]


def lowest_ordering(conn: sqlite3.Connection) -> int:
    """The lowest stream ordering stored, or 0 if none is below 0 (no sync token is
    below 0): backfilled events take orderings below it."""
    row = conn.execute("SELECT min(stream_ordering) FROM events").fetchone()
    return min(int(row[0] or 0), 0)


def max_stream_ordering(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(stream_ordering) FROM events").fetchone()
    return int(row[0] or 0)


def database_bytes(conn: sqlite3.Connection) -> int:
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int(page_count) * int(page_size)
