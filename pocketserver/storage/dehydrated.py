"""The ``dehydrated_devices`` table (migration 014): which of a user's devices is their
dehydrated device (MSC3814), and its ``device_data``.

At most one row per user. The device is an ordinary ``devices`` row, so deleting it
in any way deletes this row by cascade. Functions take a connection and never commit.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DehydratedDevice:
    device_id: str
    device_data: dict[str, object]


def get(conn: sqlite3.Connection, user_id: str) -> DehydratedDevice | None:
    """The user's dehydrated device, if they have one."""
    row = conn.execute(
        "SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = ?", (user_id,)
    ).fetchone()
    if row is None:
        return None
    data = json.loads(row[1])
    return DehydratedDevice(str(row[0]), data if isinstance(data, dict) else {})


def is_dehydrated(conn: sqlite3.Connection, user_id: str, device_id: str) -> bool:
    """Whether ``device_id`` is ``user_id``'s dehydrated device."""
    row = conn.execute(
        "SELECT 1 FROM dehydrated_devices WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    ).fetchone()
    return row is not None


def put(conn: sqlite3.Connection, user_id: str, device_id: str, device_data: str) -> None:
    """Mark ``device_id`` (an existing device) as the user's dehydrated device.

    Args:
        device_data: the client's ``device_data`` object, encoded as JSON.
    """
    conn.execute(
        "INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES (?, ?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET"
        " device_id = excluded.device_id, device_data = excluded.device_data",
        (user_id, device_id, device_data),
    )
