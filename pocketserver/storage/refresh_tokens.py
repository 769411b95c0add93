"""The ``refresh_tokens`` table: one refresh token per refreshable access token."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RefreshToken:
    id: int
    access_token_id: int
    access_token_hash: bytes
    user_id: str
    device_id: str
    valid_until_ms: int | None


def insert(
    conn: sqlite3.Connection,
    token_hash: bytes,
    access_token_id: int,
    now_ms: int,
    valid_until_ms: int | None,
) -> None:
    conn.execute(
        "INSERT INTO refresh_tokens (token_hash, access_token_id, created_ts, valid_until_ms)"
        " VALUES (?, ?, ?, ?)",
        (token_hash, access_token_id, now_ms, valid_until_ms),
    )


def get(conn: sqlite3.Connection, token_hash: bytes) -> RefreshToken | None:
    row = conn.execute(
        "SELECT r.id, r.access_token_id, r.valid_until_ms, a.token_hash, a.user_id, a.device_id"
        " FROM refresh_tokens r JOIN access_tokens a ON a.id = r.access_token_id"
        " WHERE r.token_hash = ?",
        (token_hash,),
    ).fetchone()
    if row is None:
        return None
    return RefreshToken(
        id=row["id"],
        access_token_id=row["access_token_id"],
        access_token_hash=bytes(row["token_hash"]),
        user_id=row["user_id"],
        device_id=row["device_id"],
        valid_until_ms=row["valid_until_ms"],
    )


def access_token_id(conn: sqlite3.Connection, token_hash: bytes) -> int | None:
    row = conn.execute(
        "SELECT id FROM access_tokens WHERE token_hash = ?", (token_hash,)
    ).fetchone()
    return int(row[0]) if row else None


def set_access_token_expiry(conn: sqlite3.Connection, token_id: int, valid_until_ms: int) -> None:
    conn.execute(
        "UPDATE access_tokens SET valid_until_ms = ? WHERE id = ?", (valid_until_ms, token_id)
    )
