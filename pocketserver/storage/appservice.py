"""The application services' tables: the matching position, the per-service event
queues with their transaction IDs, and the services' published room lists."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass


def matched_position(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT stream_ordering FROM appservice_stream WHERE id = 1").fetchone()
    return None if row is None else int(row[0])


def set_matched_position(conn: sqlite3.Connection, stream_ordering: int) -> None:
    conn.execute(
        "INSERT INTO appservice_stream (id, stream_ordering) VALUES (1, ?)"
        " ON CONFLICT (id) DO UPDATE SET stream_ordering = excluded.stream_ordering",
        (stream_ordering,),
    )


@dataclass(frozen=True, slots=True)
class NewEvent:
    event_id: str
    room_id: str
    stream_ordering: int
    type: str
    state_key: str | None
    sender: str


def events_after(conn: sqlite3.Connection, after: int, limit: int) -> list[NewEvent]:
    """Accepted, live events (not outliers, rejected or soft-failed) after a position."""
    rows = conn.execute(
        "SELECT event_id, room_id, stream_ordering, type, state_key, sender FROM events"
        " WHERE stream_ordering > ? AND outlier = 0 AND soft_failed = 0 AND rejected IS NULL"
        " ORDER BY stream_ordering LIMIT ?",
        (after, limit),
    )
    return [NewEvent(str(r[0]), str(r[1]), int(r[2]), str(r[3]), r[4], str(r[5])) for r in rows]


def joined_members(conn: sqlite3.Connection, room_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT state_key FROM current_state WHERE room_id = ? AND type = 'm.room.member'"
        " AND membership = 'join'",
        (room_id,),
    )
    return [str(r[0]) for r in rows]


def enqueue(conn: sqlite3.Connection, items: Iterable[tuple[str, str]], matched_upto: int) -> None:
    """Queue ``(appservice_id, event_id)`` pairs and move the matching position."""
    conn.executemany(
        "INSERT INTO appservice_queue (appservice_id, event_id) VALUES (?, ?)", list(items)
    )
    set_matched_position(conn, matched_upto)


@dataclass(frozen=True, slots=True)
class PendingTxn:
    txn_id: int
    upto_seq: int
    event_ids: list[str]


def next_transaction(conn: sqlite3.Connection, appservice_id: str, limit: int) -> PendingTxn | None:
    """The transaction to send: the one in flight (same ID, same events) or a new one
    of up to ``limit`` queued events; None when nothing is queued."""
    row = conn.execute(
        "SELECT next_txn_id, upto_seq FROM appservice_txns WHERE appservice_id = ?",
        (appservice_id,),
    ).fetchone()
    txn_id = 1 if row is None else int(row[0])
    if row is not None and row[1] is not None:
        upto = int(row[1])
        rows = conn.execute(
            "SELECT seq, event_id FROM appservice_queue WHERE appservice_id = ? AND seq <= ?"
            " ORDER BY seq",
            (appservice_id, upto),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT seq, event_id FROM appservice_queue WHERE appservice_id = ?"
            " ORDER BY seq LIMIT ?",
            (appservice_id, limit),
        ).fetchall()
        if not rows:
            return None
        upto = int(rows[-1][0])
        conn.execute(
            "INSERT INTO appservice_txns (appservice_id, next_txn_id, upto_seq) VALUES (?, ?, ?)"
            " ON CONFLICT (appservice_id) DO UPDATE SET upto_seq = excluded.upto_seq",
            (appservice_id, txn_id, upto),
        )
    return PendingTxn(txn_id, upto, [str(r[1]) for r in rows])


def complete_transaction(conn: sqlite3.Connection, appservice_id: str, txn: PendingTxn) -> None:
    """The service accepted ``txn``: drop its events and move to the next ID."""
    conn.execute(
        "DELETE FROM appservice_queue WHERE appservice_id = ? AND seq <= ?",
        (appservice_id, txn.upto_seq),
    )
    conn.execute(
        "UPDATE appservice_txns SET next_txn_id = ?, upto_seq = NULL WHERE appservice_id = ?",
        (txn.txn_id + 1, appservice_id),
    )


def queued_services(conn: sqlite3.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT DISTINCT appservice_id FROM appservice_queue")]


def queue_length(conn: sqlite3.Connection, appservice_id: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM appservice_queue WHERE appservice_id = ?", (appservice_id,)
    ).fetchone()
    return int(row[0])


# --- published room lists of the services' networks ------------------------------------


def set_listed(
    conn: sqlite3.Connection, appservice_id: str, network_id: str, room_id: str, listed: bool
) -> None:
    if listed:
        conn.execute(
            "INSERT OR IGNORE INTO appservice_room_list (appservice_id, network_id, room_id)"
            " VALUES (?, ?, ?)",
            (appservice_id, network_id, room_id),
        )
    else:
        conn.execute(
            "DELETE FROM appservice_room_list"
            " WHERE appservice_id = ? AND network_id = ? AND room_id = ?",
            (appservice_id, network_id, room_id),
        )
