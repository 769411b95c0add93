"""The ``key_backup_*`` tables: users' key backup versions and the keys in them.

Versions are numbered per user from 1 and never reused. The *current* version is the
newest one not deleted; keys can only be written there. A deleted version keeps its
row (``deleted = 1``, keys gone) so that deleting it again succeeds. Each version
counts its keys (``key_count``) and its key changes (``etag``) in its own row, so
neither needs a scan.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from pocketserver.core.key_backup import KeyQuality, should_replace

MAX_VERSION_ROWS = 1000
"""Version rows kept per user: past this, the oldest deleted versions are forgotten."""


class NoSuchVersion(Exception):
    """The version does not exist or was deleted (or there is no current version)."""


class WrongVersion(Exception):
    """Keys were written to a version that is not the current one."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current version is {current}")
        self.current = current


class TooManyKeys(Exception):
    """The write would take the version past its key limit."""


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    algorithm: str
    auth_data: dict[str, object] | str
    etag: int
    count: int


@dataclass(frozen=True, slots=True)
class BackedUpKey:
    room_id: str
    session_id: str
    quality: KeyQuality
    session_data: str
    """The ``session_data`` object as compact JSON."""

    def to_json(self) -> dict[str, object]:
        return {
            "first_message_index": self.quality.first_message_index,
            "forwarded_count": self.quality.forwarded_count,
            "is_verified": self.quality.is_verified,
            "session_data": json.loads(self.session_data),
        }


def _info(row: sqlite3.Row) -> VersionInfo:
    auth_data = json.loads(row["auth_data"])
    return VersionInfo(
        version=int(row["version"]),
        algorithm=str(row["algorithm"]),
        auth_data=auth_data if isinstance(auth_data, dict | str) else {},
        etag=int(row["etag"]),
        count=int(row["key_count"]),
    )


_VERSION_COLUMNS = "version, algorithm, auth_data, etag, key_count"


def current_version(conn: sqlite3.Connection, user_id: str) -> VersionInfo | None:
    """The user's newest version that is not deleted."""
    row = conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM key_backup_versions"
        " WHERE user_id = ? AND deleted = 0 ORDER BY version DESC LIMIT 1",
        (user_id,),
    ).fetchone()
    return _info(row) if row else None


def get_version(conn: sqlite3.Connection, user_id: str, version: int) -> VersionInfo | None:
    """A version that is not deleted."""
    row = conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM key_backup_versions"
        " WHERE user_id = ? AND version = ? AND deleted = 0",
        (user_id, version),
    ).fetchone()
    return _info(row) if row else None


def create_version(conn: sqlite3.Connection, user_id: str, algorithm: str, auth_data: str) -> int:
    """Create a version (it becomes the current one); return its number."""
    row = conn.execute(
        "SELECT COALESCE(MAX(version), 0), COUNT(*) FROM key_backup_versions WHERE user_id = ?",
        (user_id,),
    ).fetchone()
    version = int(row[0]) + 1
    if int(row[1]) >= MAX_VERSION_ROWS:
        conn.execute(
            "DELETE FROM key_backup_versions WHERE user_id = ? AND version IN"
            " (SELECT version FROM key_backup_versions WHERE user_id = ? AND deleted = 1"
            "  ORDER BY version LIMIT ?)",
            (user_id, user_id, int(row[1]) - MAX_VERSION_ROWS + 1),
        )
    conn.execute(
        "INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data)"
        " VALUES (?, ?, ?, ?)",
        (user_id, version, algorithm, auth_data),
    )
    return version


def update_auth_data(conn: sqlite3.Connection, user_id: str, version: int, auth_data: str) -> None:
    conn.execute(
        "UPDATE key_backup_versions SET auth_data = ? WHERE user_id = ? AND version = ?",
        (auth_data, user_id, version),
    )


def delete_version(conn: sqlite3.Connection, user_id: str, version: int) -> None:
    """Delete a version and its keys; deleting a deleted version changes nothing.

    Raises:
        NoSuchVersion: the version never existed.
    """
    row = conn.execute(
        "SELECT deleted FROM key_backup_versions WHERE user_id = ? AND version = ?",
        (user_id, version),
    ).fetchone()
    if row is None:
        raise NoSuchVersion
    conn.execute(
        "DELETE FROM key_backup_keys WHERE user_id = ? AND version = ?", (user_id, version)
    )
    conn.execute(
        "UPDATE key_backup_versions SET deleted = 1, key_count = 0"
        " WHERE user_id = ? AND version = ?",
        (user_id, version),
    )


def _existing_quality(
    conn: sqlite3.Connection, user_id: str, version: int, room_id: str, session_id: str
) -> KeyQuality | None:
    row = conn.execute(
        "SELECT is_verified, first_message_index, forwarded_count FROM key_backup_keys"
        " WHERE user_id = ? AND version = ? AND room_id = ? AND session_id = ?",
        (user_id, version, room_id, session_id),
    ).fetchone()
    if row is None:
        return None
    return KeyQuality(bool(row[0]), int(row[1]), int(row[2]))


def put_keys(
    conn: sqlite3.Connection,
    user_id: str,
    version: int,
    keys: Sequence[BackedUpKey],
    max_keys: int,
) -> VersionInfo:
    """Store keys in the current version, each only if it beats the stored one
    (:func:`core.key_backup.should_replace`); return the version's new state.

    Raises:
        NoSuchVersion: the user has no current version.
        WrongVersion: ``version`` is not the current one.
        TooManyKeys: the version would hold more than ``max_keys`` keys.
    """
    current = current_version(conn, user_id)
    if current is None:
        raise NoSuchVersion
    if current.version != version:
        raise WrongVersion(current.version)
    added = changed = 0
    for key in keys:
        existing = _existing_quality(conn, user_id, version, key.room_id, key.session_id)
        if not should_replace(existing, key.quality):
            continue
        conn.execute(
            "INSERT OR REPLACE INTO key_backup_keys (user_id, version, room_id, session_id,"
            " first_message_index, forwarded_count, is_verified, session_data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                user_id,
                version,
                key.room_id,
                key.session_id,
                key.quality.first_message_index,
                key.quality.forwarded_count,
                int(key.quality.is_verified),
                key.session_data,
            ),
        )
        changed += 1
        added += existing is None
    if current.count + added > max_keys:
        raise TooManyKeys
    return _after_change(conn, user_id, version, added if changed else None)


def delete_keys(
    conn: sqlite3.Connection,
    user_id: str,
    version: int,
    room_id: str | None,
    session_id: str | None,
) -> VersionInfo:
    """Delete all keys of a version, or a room's, or one session's; return its new state.

    Raises:
        NoSuchVersion: the version does not exist or was deleted.
    """
    if get_version(conn, user_id, version) is None:
        raise NoSuchVersion
    sql = "DELETE FROM key_backup_keys WHERE user_id = ? AND version = ?"
    args: list[object] = [user_id, version]
    if room_id is not None:
        sql += " AND room_id = ?"
        args.append(room_id)
    if session_id is not None:
        sql += " AND session_id = ?"
        args.append(session_id)
    deleted = conn.execute(sql, args).rowcount
    return _after_change(conn, user_id, version, -deleted if deleted else None)


def _after_change(
    conn: sqlite3.Connection, user_id: str, version: int, count_delta: int | None
) -> VersionInfo:
    """The version's state after a write: when keys changed (``count_delta`` not None),
    a new ``etag`` and the count moved by ``count_delta`` first."""
    if count_delta is not None:
        conn.execute(
            "UPDATE key_backup_versions SET etag = etag + 1, key_count = key_count + ?"
            " WHERE user_id = ? AND version = ?",
            (count_delta, user_id, version),
        )
    info = get_version(conn, user_id, version)
    assert info is not None
    return info


def keys_page(
    conn: sqlite3.Connection,
    user_id: str,
    version: int,
    room_id: str | None,
    after: tuple[str, str] | None,
    limit: int,
) -> list[BackedUpKey]:
    """Up to ``limit`` keys of a version (or of one room) after ``(room, session)``,
    in (room, session) order."""
    sql = (
        "SELECT room_id, session_id, is_verified, first_message_index, forwarded_count,"
        " session_data FROM key_backup_keys WHERE user_id = ? AND version = ?"
    )
    args: list[object] = [user_id, version]
    if room_id is not None:
        sql += " AND room_id = ?"
        args.append(room_id)
    if after is not None:
        sql += " AND (room_id, session_id) > (?, ?)"
        args.extend(after)
    sql += " ORDER BY room_id, session_id LIMIT ?"
    args.append(limit)
    return [
        BackedUpKey(str(r[0]), str(r[1]), KeyQuality(bool(r[2]), int(r[3]), int(r[4])), str(r[5]))
        for r in conn.execute(sql, args)
    ]


def get_key(
    conn: sqlite3.Connection, user_id: str, version: int, room_id: str, session_id: str
) -> BackedUpKey | None:
    row = conn.execute(
        "SELECT is_verified, first_message_index, forwarded_count, session_data"
        " FROM key_backup_keys"
        " WHERE user_id = ? AND version = ? AND room_id = ? AND session_id = ?",
        (user_id, version, room_id, session_id),
    ).fetchone()
    if row is None:
        return None
    return BackedUpKey(
        room_id, session_id, KeyQuality(bool(row[0]), int(row[1]), int(row[2])), str(row[3])
    )
