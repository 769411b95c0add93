"""The ``registration_tokens`` table (Synapse's admin API and ``m.login.registration_token``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RegistrationToken:
    token: str
    uses_allowed: int | None
    completed: int
    expiry_time: int | None


def _row(row: sqlite3.Row) -> RegistrationToken:
    return RegistrationToken(
        token=row["token"],
        uses_allowed=row["uses_allowed"],
        completed=row["completed"],
        expiry_time=row["expiry_time"],
    )


def list_tokens(conn: sqlite3.Connection) -> list[RegistrationToken]:
    return [_row(r) for r in conn.execute("SELECT * FROM registration_tokens ORDER BY token")]


def get_token(conn: sqlite3.Connection, token: str) -> RegistrationToken | None:
    row = conn.execute("SELECT * FROM registration_tokens WHERE token = ?", (token,)).fetchone()
    return _row(row) if row else None


def insert_token(
    conn: sqlite3.Connection, token: str, uses_allowed: int | None, expiry_time: int | None
) -> bool:
    """Insert a token; return False (and change nothing) if it exists."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO registration_tokens (token, uses_allowed, expiry_time)"
        " VALUES (?, ?, ?)",
        (token, uses_allowed, expiry_time),
    )
    return cur.rowcount == 1


def update_token(
    conn: sqlite3.Connection, token: str, changes: dict[str, int | None]
) -> RegistrationToken | None:
    """Set ``uses_allowed`` and/or ``expiry_time``; return the token, or None if unknown."""
    for column, value in changes.items():
        if column not in ("uses_allowed", "expiry_time"):
            raise ValueError(f"not an updatable column: {column!r}")
        conn.execute(f"UPDATE registration_tokens SET {column} = ? WHERE token = ?", (value, token))
    return get_token(conn, token)


def delete_token(conn: sqlite3.Connection, token: str) -> bool:
    cur = conn.execute("DELETE FROM registration_tokens WHERE token = ?", (token,))
    return cur.rowcount == 1


def count_use(conn: sqlite3.Connection, token: str) -> None:
    """Count one completed registration (the use was reserved while it was pending)."""
    conn.execute(
        "UPDATE registration_tokens SET completed = completed + 1 WHERE token = ?", (token,)
    )
