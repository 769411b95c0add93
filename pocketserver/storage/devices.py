"""The ``devices`` and ``access_tokens`` tables."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenOwner:
    user_id: str
    device_id: str
    token_id: int
    valid_until_ms: int | None
    is_guest: bool = False


def ensure_device(
    conn: sqlite3.Connection,
    user_id: str,
    device_id: str,
    display_name: str | None,
    now_ms: int,
) -> bool:
    """Create the device if it doesn't exist; return True if it was created."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO devices (user_id, device_id, display_name, created_ts)"
        " VALUES (?, ?, ?, ?)",
        (user_id, device_id, display_name, now_ms),
    )
    return cur.rowcount == 1


def device_exists(conn: sqlite3.Connection, user_id: str, device_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
    ).fetchone()
    return row is not None


def delete_device(conn: sqlite3.Connection, user_id: str, device_id: str) -> None:
    """Delete a device and (by cascade) its access tokens."""
    conn.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id))


def delete_all_devices(conn: sqlite3.Connection, user_id: str) -> list[str]:
    """Delete every device of a user and their tokens; return the device IDs."""
    ids = [
        r[0] for r in conn.execute("SELECT device_id FROM devices WHERE user_id = ?", (user_id,))
    ]
    conn.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))
    return ids


def delete_device_tokens(conn: sqlite3.Connection, user_id: str, device_id: str) -> None:
    conn.execute(
        "DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id)
    )


def insert_token(
    conn: sqlite3.Connection,
    token_hash: bytes,
    user_id: str,
    device_id: str,
    now_ms: int,
    valid_until_ms: int | None = None,
) -> int:
    cur = conn.execute(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, valid_until_ms)"
        " VALUES (?, ?, ?, ?, ?)",
        (token_hash, user_id, device_id, now_ms, valid_until_ms),
    )
    return int(cur.lastrowid or 0)


def get_token_owner(conn: sqlite3.Connection, token_hash: bytes) -> TokenOwner | None:
    row = conn.execute(
        "SELECT t.id, t.user_id, t.device_id, t.valid_until_ms, u.is_guest"
        " FROM access_tokens t LEFT JOIN users u ON u.name = t.user_id WHERE t.token_hash = ?",
        (token_hash,),
    ).fetchone()
    if row is None:
        return None
    return TokenOwner(
        user_id=row["user_id"],
        device_id=row["device_id"],
        token_id=row["id"],
        valid_until_ms=row["valid_until_ms"],
        is_guest=bool(row["is_guest"]),
    )


def token_hashes_for_user(conn: sqlite3.Connection, user_id: str) -> list[bytes]:
    return [
        bytes(r[0])
        for r in conn.execute("SELECT token_hash FROM access_tokens WHERE user_id = ?", (user_id,))
    ]


def token_hashes_for_device(conn: sqlite3.Connection, user_id: str, device_id: str) -> list[bytes]:
    return [
        bytes(r[0])
        for r in conn.execute(
            "SELECT token_hash FROM access_tokens WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
    ]
