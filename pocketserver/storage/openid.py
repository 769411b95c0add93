"""The ``openid_tokens`` table: short-lived tokens that name a user to third parties."""

from __future__ import annotations

import sqlite3


def insert(
    conn: sqlite3.Connection,
    token_hash: bytes,
    user_id: str,
    now_ms: int,
    expires_ts: int,
    max_per_user: int,
) -> None:
    """Store a token; drop expired tokens, and the user's oldest past ``max_per_user``."""
    conn.execute("DELETE FROM openid_tokens WHERE expires_ts <= ?", (now_ms,))
    conn.execute(
        "INSERT INTO openid_tokens (token_hash, user_id, created_ts, expires_ts)"
        " VALUES (?, ?, ?, ?)",
        (token_hash, user_id, now_ms, expires_ts),
    )
    conn.execute(
        "DELETE FROM openid_tokens WHERE user_id = ? AND token_hash NOT IN ("
        " SELECT token_hash FROM openid_tokens WHERE user_id = ?"
        " ORDER BY created_ts DESC, rowid DESC LIMIT ?)",
        (user_id, user_id, max_per_user),
    )


def user_for(conn: sqlite3.Connection, token_hash: bytes, now_ms: int) -> str | None:
    """The user a live token names, or None (unknown or expired)."""
    row = conn.execute(
        "SELECT user_id FROM openid_tokens WHERE token_hash = ? AND expires_ts > ?",
        (token_hash, now_ms),
    ).fetchone()
    return str(row[0]) if row else None
