"""Transaction IDs of sent events: idempotent sends and ``unsigned.transaction_id``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence


def get_event_for_txn(
    conn: sqlite3.Connection, user_id: str, device_id: str, txn_id: str
) -> tuple[str, str] | None:
    """(room_id, event_id) sent earlier with this transaction ID, if any."""
    row = conn.execute(
        "SELECT room_id, event_id FROM event_txn_ids"
        " WHERE user_id = ? AND device_id = ? AND txn_id = ?",
        (user_id, device_id, txn_id),
    ).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def record_txn(
    conn: sqlite3.Connection,
    user_id: str,
    device_id: str,
    txn_id: str,
    room_id: str,
    event_id: str,
    now_ms: int,
) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO event_txn_ids"
        " (user_id, device_id, txn_id, room_id, event_id, created_ts) VALUES (?, ?, ?, ?, ?, ?)",
        (user_id, device_id, txn_id, room_id, event_id, now_ms),
    )


def transaction_ids_for(
    conn: sqlite3.Connection, user_id: str, device_id: str, event_ids: Sequence[str]
) -> dict[str, str]:
    """event_id -> txn_id for those of ``event_ids`` this device sent."""
    result: dict[str, str] = {}
    for i in range(0, len(event_ids), 500):
        chunk = list(event_ids[i : i + 500])
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT event_id, txn_id FROM event_txn_ids WHERE event_id IN ({marks})"
            " AND user_id = ? AND device_id = ?",
            [*chunk, user_id, device_id],
        )
        result.update({str(e): str(t) for e, t in rows})
    return result
