"""Reading and changing devices for the device management API (``devices`` table)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from pocketserver.storage import e2e_keys as e2e_key_store


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None
    last_seen_user_agent: str | None = None
    """Not part of the spec's ``Device``: only ``/admin/whois`` shows it."""

    def to_json(self) -> dict[str, object]:
        """The spec's ``Device`` object.

        Unknown fields are null rather than absent, as Synapse sends them:
        matrix-nio rejects a device without all four keys.
        """
        return {
            "device_id": self.device_id,
            "display_name": self.display_name,
            "last_seen_ip": self.last_seen_ip,
            "last_seen_ts": self.last_seen_ts,
        }


def _row(row: sqlite3.Row) -> DeviceInfo:
    return DeviceInfo(
        device_id=row["device_id"],
        display_name=row["display_name"],
        last_seen_ts=row["last_seen_ts"],
        last_seen_ip=row["last_seen_ip"],
        last_seen_user_agent=row["last_seen_user_agent"],
    )


_COLUMNS = "device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent"


def list_devices(conn: sqlite3.Connection, user_id: str) -> list[DeviceInfo]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM devices WHERE user_id = ? ORDER BY device_id", (user_id,)
    )
    return [_row(r) for r in rows]


def get_device(conn: sqlite3.Connection, user_id: str, device_id: str) -> DeviceInfo | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM devices WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    ).fetchone()
    return _row(row) if row else None


def set_display_name(
    conn: sqlite3.Connection, user_id: str, device_id: str, display_name: str
) -> int | None:
    """Rename a device: None for an unknown device, else the device list stream position
    of the change, or 0 when the device already has that name (nothing recorded).

    A rename changes the user's device list (as Synapse: /keys/query shows the name),
    so it is recorded on the device list stream."""
    row = conn.execute(
        "SELECT display_name FROM devices WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    ).fetchone()
    if row is None:
        return None
    if row[0] == display_name:
        return 0
    conn.execute(
        "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
        (display_name, user_id, device_id),
    )
    return e2e_key_store.record_change(conn, user_id, device_id=device_id)


def record_last_seen(
    conn: sqlite3.Connection, seen: Iterable[tuple[str, str, int, str, str | None]]
) -> None:
    """Store ``(user_id, device_id, ts, ip, user_agent)`` sightings; devices gone
    meanwhile are skipped."""
    conn.executemany(
        "UPDATE devices SET last_seen_ts = ?, last_seen_ip = ?, last_seen_user_agent = ?"
        " WHERE user_id = ? AND device_id = ?",
        [(ts, ip, agent, user_id, device_id) for user_id, device_id, ts, ip, agent in seen],
    )


def delete_devices(
    conn: sqlite3.Connection, user_id: str, device_ids: Iterable[str]
) -> list[bytes]:
    """Delete devices (and by cascade their tokens); return the deleted token hashes."""
    hashes: list[bytes] = []
    for device_id in device_ids:
        hashes.extend(
            bytes(r[0])
            for r in conn.execute(
                "SELECT token_hash FROM access_tokens WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            )
        )
        conn.execute(
            "DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )
    return hashes


def delete_other_devices(conn: sqlite3.Connection, user_id: str, keep: str | None) -> list[bytes]:
    """Delete every device of ``user_id`` but ``keep``; return the deleted token hashes."""
    others = [
        r[0]
        for r in conn.execute("SELECT device_id FROM devices WHERE user_id = ?", (user_id,))
        if r[0] != keep
    ]
    return delete_devices(conn, user_id, others)
