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
    is_admin: bool = False
    replaces: bytes | None = None
    """The hash of the access token this one replaced by a refresh, until first use."""


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
    replaces: bytes | None = None,
) -> int:
    cur = conn.execute(
        "INSERT INTO access_tokens"
        " (token_hash, user_id, device_id, created_ts, valid_until_ms, replaces_token_hash)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (token_hash, user_id, device_id, now_ms, valid_until_ms, replaces),
    )
    return int(cur.lastrowid or 0)


def retire_replaced(conn: sqlite3.Connection, token_hash: bytes) -> bytes | None:
    """The access token ``token_hash`` (or its refresh token) is in use: delete the token
    it replaced, with that token's refresh token. Returns the deleted token's hash."""
    row = conn.execute(
        "SELECT replaces_token_hash FROM access_tokens WHERE token_hash = ?", (token_hash,)
    ).fetchone()
    if row is None or row[0] is None:
        return None
    old = bytes(row[0])
    conn.execute("DELETE FROM access_tokens WHERE token_hash = ?", (old,))
    conn.execute(
        "UPDATE access_tokens SET replaces_token_hash = NULL WHERE token_hash = ?", (token_hash,)
    )
    return old


def delete_successors(conn: sqlite3.Connection, token_hash: bytes) -> list[bytes]:
    """Delete the not yet used tokens a refresh issued to replace ``token_hash`` (with their
    refresh tokens); their hashes."""
    hashes = [
        bytes(r[0])
        for r in conn.execute(
            "SELECT token_hash FROM access_tokens WHERE replaces_token_hash = ?", (token_hash,)
        )
    ]
    conn.execute("DELETE FROM access_tokens WHERE replaces_token_hash = ?", (token_hash,))
    return hashes


def get_token_owner(conn: sqlite3.Connection, token_hash: bytes) -> TokenOwner | None:
    row = conn.execute(
        "SELECT t.id, t.user_id, t.device_id, t.valid_until_ms, t.replaces_token_hash, u.is_guest,"
        " u.admin"
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
        is_admin=bool(row["admin"]),
        replaces=None if row["replaces_token_hash"] is None else bytes(row["replaces_token_hash"]),
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


def delete_user_tokens(conn: sqlite3.Connection, user_id: str) -> int:
    """Delete every access token of a user (and so their refresh tokens); the devices
    stay. Returns how many devices had a session."""
    row = conn.execute(
        "SELECT count(DISTINCT device_id) FROM access_tokens WHERE user_id = ?", (user_id,)
    ).fetchone()
    conn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
    return int(row[0])
