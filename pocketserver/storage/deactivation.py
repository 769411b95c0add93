"""Deactivating a local account: one transaction over users, devices, profiles."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from pocketserver.storage import device_info


def deactivate_user(conn: sqlite3.Connection, user_id: str, *, erase: bool) -> list[bytes]:
    """Mark the user deactivated, delete every device and token, clear the profile.

    Returns:
        The hashes of the deleted access tokens (for the token cache).
    """
    conn.execute("UPDATE users SET deactivated = 1 WHERE name = ?", (user_id,))
    hashes = device_info.delete_other_devices(conn, user_id, None)
    conn.execute(
        "UPDATE profiles SET displayname = NULL, avatar_url = NULL WHERE user_id = ?", (user_id,)
    )
    if erase:
        conn.execute("INSERT OR IGNORE INTO erased_users (user_id) VALUES (?)", (user_id,))
    return hashes


def is_erased(conn: sqlite3.Connection, user_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM erased_users WHERE user_id = ?", (user_id,)).fetchone()
    return row is not None


def erased_among(conn: sqlite3.Connection, user_ids: Iterable[str]) -> set[str]:
    """Which of ``user_ids`` asked to be erased when they deactivated."""
    ids = list(dict.fromkeys(user_ids))
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        rows = conn.execute(
            f"SELECT user_id FROM erased_users WHERE user_id IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        found.update(str(r[0]) for r in rows)
    return found
