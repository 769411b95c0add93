"""The ``profiles`` table (local users' display names and avatars)."""

from __future__ import annotations

import sqlite3


def get_profile(conn: sqlite3.Connection, user_id: str) -> tuple[str | None, str | None] | None:
    row = conn.execute(
        "SELECT displayname, avatar_url FROM profiles WHERE user_id = ?", (user_id,)
    ).fetchone()
    return (row[0], row[1]) if row else None


def set_profile_field(
    conn: sqlite3.Connection, user_id: str, field: str, value: str | None
) -> None:
    if field not in ("displayname", "avatar_url"):
        raise ValueError(f"unknown profile field {field!r}")
    conn.execute("INSERT OR IGNORE INTO profiles (user_id) VALUES (?)", (user_id,))
    conn.execute(f"UPDATE profiles SET {field} = ? WHERE user_id = ?", (value, user_id))
