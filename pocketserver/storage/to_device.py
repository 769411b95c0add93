"""The ``to_device_*`` tables: each device's inbox of send-to-device messages, the
to-device stream position, and the transaction IDs of sends.

One send request takes the next stream position and stamps it on every message it
queues (a request sends at most one message per device). A device's messages with a
position in ``(since, upto]`` are what ``/sync`` delivers; those at or below the
``since`` of a later sync were delivered and are deleted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToDeviceMessage:
    stream_id: int
    sender: str
    type: str
    content: dict[str, object]


@dataclass(frozen=True, slots=True)
class Pending:
    """What a sync finds in a device's inbox."""

    acknowledged: bool
    """Some messages at or below ``since`` are still stored (delivered: to delete)."""
    messages: list[ToDeviceMessage]


@dataclass(frozen=True, slots=True)
class SendResult:
    position: int
    delivered: int
    dropped: dict[tuple[str, str], int]
    """(user, device) -> how many old messages were dropped to keep the inbox bounded."""


def stream_position(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT position FROM to_device_stream WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def _next_position(conn: sqlite3.Connection) -> int:
    conn.execute("UPDATE to_device_stream SET position = position + 1 WHERE id = 1")
    return stream_position(conn)


def seen_txn(
    conn: sqlite3.Connection, user_id: str, device_id: str, event_type: str, txn_id: str
) -> bool:
    row = conn.execute(
        "SELECT 1 FROM to_device_txns"
        " WHERE user_id = ? AND device_id = ? AND event_type = ? AND txn_id = ?",
        (user_id, device_id, event_type, txn_id),
    ).fetchone()
    return row is not None


def user_devices(conn: sqlite3.Connection, user_id: str) -> list[str]:
    return [
        str(r[0])
        for r in conn.execute("SELECT device_id FROM devices WHERE user_id = ?", (user_id,))
    ]


def _device_exists(conn: sqlite3.Connection, user_id: str, device_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
    ).fetchone()
    return row is not None


def send(
    conn: sqlite3.Connection,
    sender: str,
    sender_device: str,
    event_type: str,
    txn_id: str,
    messages: Sequence[tuple[str, str, str]],
    now_ms: int,
    max_inbox: int,
    txn_max_age_ms: int,
) -> SendResult | None:
    """Queue messages for local devices, once per transaction ID.

    Args:
        messages: ``(user_id, device_id or "*", encoded content)``; ``*`` is every
            device the user has now, and an explicit device wins over ``*``. Unknown
            users and devices are skipped.
        max_inbox: past this many messages in a device's inbox the oldest are dropped.
        txn_max_age_ms: transaction IDs older than this are forgotten.

    Returns:
        None if this transaction ID was already used (nothing is queued again).
    """
    conn.execute("DELETE FROM to_device_txns WHERE created_ts < ?", (now_ms - txn_max_age_ms,))
    if seen_txn(conn, sender, sender_device, event_type, txn_id):
        return None
    conn.execute(
        "INSERT INTO to_device_txns (user_id, device_id, event_type, txn_id, created_ts)"
        " VALUES (?, ?, ?, ?, ?)",
        (sender, sender_device, event_type, txn_id, now_ms),
    )
    return deliver(conn, sender, event_type, messages, max_inbox)


def deliver(
    conn: sqlite3.Connection,
    sender: str,
    event_type: str,
    messages: Sequence[tuple[str, str, str]],
    max_inbox: int,
) -> SendResult:
    """Queue ``(user_id, device_id or "*", encoded content)`` messages in local
    devices' inboxes (see :func:`send`), with no transaction ID check."""
    targets: dict[tuple[str, str], str] = {}
    for user_id, device_id, content in messages:
        if device_id == "*":
            for each in user_devices(conn, user_id):
                targets.setdefault((user_id, each), content)
    for user_id, device_id, content in messages:
        if device_id != "*" and _device_exists(conn, user_id, device_id):
            targets[(user_id, device_id)] = content
    if not targets:
        return SendResult(stream_position(conn), 0, {})  # nothing to wake anyone for
    position = _next_position(conn)
    conn.executemany(
        "INSERT INTO to_device_inbox (user_id, device_id, stream_id, sender, type, content)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(u, d, position, sender, event_type, c) for (u, d), c in targets.items()],
    )
    dropped: dict[tuple[str, str], int] = {}
    for user_id, device_id in targets:
        excess = _inbox_size(conn, user_id, device_id) - max_inbox
        if excess > 0:
            _drop_oldest(conn, user_id, device_id, excess)
            dropped[(user_id, device_id)] = excess
    return SendResult(position, len(targets), dropped)


def _inbox_size(conn: sqlite3.Connection, user_id: str, device_id: str) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM to_device_inbox WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    ).fetchone()
    return int(row[0])


def _drop_oldest(conn: sqlite3.Connection, user_id: str, device_id: str, count: int) -> None:
    conn.execute(
        "DELETE FROM to_device_inbox WHERE user_id = ? AND device_id = ? AND stream_id IN"
        " (SELECT stream_id FROM to_device_inbox WHERE user_id = ? AND device_id = ?"
        "  ORDER BY stream_id LIMIT ?)",
        (user_id, device_id, user_id, device_id, count),
    )


def pending(
    conn: sqlite3.Connection,
    user_id: str,
    device_id: str,
    since: int | None,
    upto: int,
    limit: int,
) -> Pending:
    """The device's first ``limit`` messages in ``(since, upto]``, oldest first."""
    after = since or 0
    acknowledged = (
        since is not None
        and conn.execute(
            "SELECT 1 FROM to_device_inbox"
            " WHERE user_id = ? AND device_id = ? AND stream_id <= ? LIMIT 1",
            (user_id, device_id, since),
        ).fetchone()
        is not None
    )
    rows = conn.execute(
        "SELECT stream_id, sender, type, content FROM to_device_inbox"
        " WHERE user_id = ? AND device_id = ? AND stream_id > ? AND stream_id <= ?"
        " ORDER BY stream_id LIMIT ?",
        (user_id, device_id, after, upto, limit),
    )
    return Pending(acknowledged, [_message(r) for r in rows])


def _message(row: sqlite3.Row) -> ToDeviceMessage:
    content = json.loads(row["content"])
    return ToDeviceMessage(
        int(row["stream_id"]),
        str(row["sender"]),
        str(row["type"]),
        content if isinstance(content, dict) else {},
    )


def delete_delivered(conn: sqlite3.Connection, user_id: str, device_id: str, upto: int) -> int:
    """Delete the device's messages at or below ``upto``; return how many."""
    cur = conn.execute(
        "DELETE FROM to_device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
        (user_id, device_id, upto),
    )
    return cur.rowcount


def inbox(conn: sqlite3.Connection, user_id: str, device_id: str) -> list[ToDeviceMessage]:
    """Every stored message of a device (tests and admin tools)."""
    rows = conn.execute(
        "SELECT stream_id, sender, type, content FROM to_device_inbox"
        " WHERE user_id = ? AND device_id = ? ORDER BY stream_id",
        (user_id, device_id),
    )
    return [_message(r) for r in rows]
