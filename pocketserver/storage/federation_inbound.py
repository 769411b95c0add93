"""Storage of inbound federation transactions: answers kept for retries, staged PDUs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

TXN_KEEP_MS = 24 * 60 * 60 * 1000
"""How long a transaction's answer is kept for retries (a day, as Synapse)."""


@dataclass(frozen=True, slots=True)
class StagedPdu:
    seq: int
    origin: str
    room_id: str
    event_id: str
    pdu: dict[str, object]


def txn_response(conn: sqlite3.Connection, origin: str, txn_id: str) -> dict[str, object] | None:
    """The answer given to this transaction before, if it was seen."""
    row = conn.execute(
        "SELECT response FROM federation_received_txns WHERE origin = ? AND txn_id = ?",
        (origin, txn_id),
    ).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def record_transaction(
    conn: sqlite3.Connection,
    origin: str,
    txn_id: str,
    response: dict[str, object],
    staged: Sequence[tuple[str, str, dict[str, object]]],
    now_ms: int,
) -> bool:
    """Stage ``(room_id, event_id, pdu)`` and keep the answer, in the caller's write
    transaction; False (nothing written) if this transaction was recorded already.
    Answers older than :data:`TXN_KEEP_MS` are dropped on the way."""
    inserted = conn.execute(
        "INSERT OR IGNORE INTO federation_received_txns (origin, txn_id, response, received_ts)"
        " VALUES (?, ?, ?, ?)",
        (origin, txn_id, json.dumps(response, separators=(",", ":")), now_ms),
    ).rowcount
    if not inserted:
        return False
    conn.executemany(
        "INSERT INTO federation_staged_pdus (origin, room_id, event_id, pdu, received_ts)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (origin, room_id, event_id, json.dumps(pdu, separators=(",", ":")), now_ms)
            for room_id, event_id, pdu in staged
        ],
    )
    conn.execute(
        "DELETE FROM federation_received_txns WHERE received_ts < ?", (now_ms - TXN_KEEP_MS,)
    )
    return True


def staged_rooms(conn: sqlite3.Connection) -> list[str]:
    """Rooms with PDUs waiting (at start-up: what a crash left)."""
    return [str(r[0]) for r in conn.execute("SELECT DISTINCT room_id FROM federation_staged_pdus")]


def next_staged(conn: sqlite3.Connection, room_id: str, limit: int) -> list[StagedPdu]:
    """The room's oldest staged PDUs, in the order received."""
    rows = conn.execute(
        "SELECT seq, origin, room_id, event_id, pdu FROM federation_staged_pdus"
        " WHERE room_id = ? ORDER BY seq LIMIT ?",
        (room_id, limit),
    )
    return [StagedPdu(int(r[0]), str(r[1]), str(r[2]), str(r[3]), json.loads(r[4])) for r in rows]


def drop_staged(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute("DELETE FROM federation_staged_pdus WHERE seq = ?", (seq,))


def staged_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM federation_staged_pdus").fetchone()[0])
