"""The ``users`` table."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    password_hash: str | None
    creation_ts: int
    admin: bool
    deactivated: bool
    is_guest: bool
    user_type: str | None


def _row(row: sqlite3.Row) -> User:
    return User(
        user_id=row["name"],
        password_hash=row["password_hash"],
        creation_ts=row["creation_ts"],
        admin=bool(row["admin"]),
        deactivated=bool(row["deactivated"]),
        is_guest=bool(row["is_guest"]),
        user_type=row["user_type"],
    )


def insert_user(
    conn: sqlite3.Connection,
    user_id: str,
    password_hash: str | None,
    creation_ts: int,
    *,
    admin: bool = False,
    user_type: str | None = None,
) -> bool:
    """Insert a user; return False (and change nothing) if the ID is taken."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO users (name, password_hash, creation_ts, admin, user_type)"
        " VALUES (?, ?, ?, ?, ?)",
        (user_id, password_hash, creation_ts, int(admin), user_type),
    )
    return cur.rowcount == 1


def get_user(conn: sqlite3.Connection, user_id: str) -> User | None:
    row = conn.execute("SELECT * FROM users WHERE name = ?", (user_id,)).fetchone()
    return _row(row) if row else None


def find_user_case_insensitive(conn: sqlite3.Connection, user_id: str) -> list[User]:
    """Users whose ID equals ``user_id`` ignoring ASCII case (old mixed-case accounts)."""
    rows = conn.execute("SELECT * FROM users WHERE lower(name) = lower(?)", (user_id,))
    return [_row(r) for r in rows]


def set_password_hash(conn: sqlite3.Connection, user_id: str, password_hash: str | None) -> bool:
    cur = conn.execute(
        "UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, user_id)
    )
    return cur.rowcount == 1


def count_users(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM users").fetchone()[0])
