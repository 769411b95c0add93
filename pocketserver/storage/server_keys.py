"""The ``server_keys`` table: other servers' verify keys, as the keyring learnt them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from pocketserver.core.server_keys import ServerKey

MAX_KEYS_PER_SERVER = 128
"""Rows kept per server: a server that changes keys at every fetch cannot fill the disk."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    key: ServerKey
    from_server: str
    added_ts: int


def store(
    conn: sqlite3.Connection,
    server_name: str,
    from_server: str,
    added_ts: int,
    keys: Iterable[ServerKey],
    key_json: str,
) -> None:
    """Record the keys one answer listed; keys it did not list are kept.

    The server's own answer replaces what we knew of a key (it may retire the key
    early); a notary's answer replaces it only if it is valid for at least as long,
    so a notary's stale copy never shortens what the server itself told us.
    """
    conn.executemany(
        "INSERT INTO server_keys (server_name, key_id, verify_key,"
        " valid_until_ts, from_server, added_ts, key_json) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (server_name, key_id) DO UPDATE SET verify_key = excluded.verify_key,"
        " valid_until_ts = excluded.valid_until_ts, from_server = excluded.from_server,"
        " added_ts = excluded.added_ts, key_json = excluded.key_json"
        " WHERE excluded.from_server = excluded.server_name"
        " OR excluded.valid_until_ts >= server_keys.valid_until_ts",
        [
            (server_name, k.key_id, k.key, k.valid_until_ts, from_server, added_ts, key_json)
            for k in keys
        ],
    )
    conn.execute(
        "DELETE FROM server_keys WHERE server_name = ? AND key_id NOT IN ("
        " SELECT key_id FROM server_keys WHERE server_name = ?"
        " ORDER BY added_ts DESC, valid_until_ts DESC LIMIT ?)",
        (server_name, server_name, MAX_KEYS_PER_SERVER),
    )


def keys_of(conn: sqlite3.Connection, server_name: str) -> list[StoredKey]:
    """Every key stored for ``server_name``."""
    rows = conn.execute(
        "SELECT key_id, verify_key, valid_until_ts, from_server, added_ts FROM server_keys"
        " WHERE server_name = ? ORDER BY key_id",
        (server_name,),
    ).fetchall()
    return [StoredKey(ServerKey(r[0], bytes(r[1]), r[2]), r[3], r[4]) for r in rows]


def answers_for(
    conn: sqlite3.Connection, server_name: str, key_ids: Iterable[str] | None
) -> list[str]:
    """The distinct stored answers (``key_json``) listing the given keys (None: any)."""
    if key_ids is None:
        rows = conn.execute(
            "SELECT DISTINCT key_json FROM server_keys WHERE server_name = ?", (server_name,)
        ).fetchall()
    else:
        wanted = list(key_ids)
        marks = ",".join("?" * len(wanted))
        rows = conn.execute(
            f"SELECT DISTINCT key_json FROM server_keys WHERE server_name = ?"
            f" AND key_id IN ({marks})",
            (server_name, *wanted),
        ).fetchall()
    return [str(r[0]) for r in rows]
