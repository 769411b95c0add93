"""Pushers (``schema/013_pushers.sql``): plain functions on a connection.

A pusher is keyed by (user, app_id, pushkey) and belongs to the device that set it;
deleting the device deletes it by cascade.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from pocketserver.core.pushers import PusherKey, PusherSettings

_COLUMNS = (
    "user_id, app_id, pushkey, device_id, kind, app_display_name, device_display_name,"
    " profile_tag, lang, data_json, pushkey_ts"
)


@dataclass(frozen=True, slots=True)
class StoredPusher:
    user_id: str
    app_id: str
    pushkey: str
    device_id: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, object]
    pushkey_ts: int  # milliseconds

    @property
    def key(self) -> PusherKey:
        return PusherKey(self.user_id, self.app_id, self.pushkey)

    def to_json(self) -> dict[str, object]:
        """The ``GET /pushers`` entry."""
        out: dict[str, object] = {
            "pushkey": self.pushkey,
            "kind": self.kind,
            "app_id": self.app_id,
            "app_display_name": self.app_display_name,
            "device_display_name": self.device_display_name,
            "lang": self.lang,
            "data": self.data,
        }
        if self.profile_tag is not None:
            out["profile_tag"] = self.profile_tag
        return out


def _row(row: sqlite3.Row | tuple[object, ...]) -> StoredPusher:
    data = json.loads(str(row[9]))
    return StoredPusher(
        user_id=str(row[0]),
        app_id=str(row[1]),
        pushkey=str(row[2]),
        device_id=str(row[3]),
        kind=str(row[4]),
        app_display_name=str(row[5]),
        device_display_name=str(row[6]),
        profile_tag=None if row[7] is None else str(row[7]),
        lang=str(row[8]),
        data=data if isinstance(data, dict) else {},
        pushkey_ts=int(str(row[10])),
    )


def pushers_for_user(conn: sqlite3.Connection, user_id: str) -> list[StoredPusher]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM pushers WHERE user_id = ? ORDER BY app_id, pushkey",
        (user_id,),
    )
    return [_row(r) for r in rows]


def pushers_for_users(conn: sqlite3.Connection, user_ids: Iterable[str]) -> list[StoredPusher]:
    found: list[StoredPusher] = []
    for user_id in dict.fromkeys(user_ids):
        found.extend(pushers_for_user(conn, user_id))
    return found


def users_with_pushers(conn: sqlite3.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT DISTINCT user_id FROM pushers")]


def get_pusher(conn: sqlite3.Connection, key: PusherKey) -> StoredPusher | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
        (key.user_id, key.app_id, key.pushkey),
    ).fetchone()
    return None if row is None else _row(row)


def count_for_user(conn: sqlite3.Connection, user_id: str) -> int:
    row = conn.execute("SELECT count(*) FROM pushers WHERE user_id = ?", (user_id,)).fetchone()
    return int(row[0])


def set_pusher(
    conn: sqlite3.Connection,
    user_id: str,
    device_id: str,
    settings: PusherSettings,
    now_ms: int,
) -> list[PusherKey]:
    """Create or replace the user's pusher for (app_id, pushkey), owned by ``device_id``.

    Without ``append``, other users' pushers with the same app_id and pushkey are
    deleted (pusher.yaml ``append``).

    Returns:
        The keys of the other users' pushers deleted.
    """
    removed: list[PusherKey] = []
    if not settings.append:
        removed = [
            PusherKey(str(r[0]), settings.app_id, settings.pushkey)
            for r in conn.execute(
                "SELECT user_id FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id != ?",
                (settings.app_id, settings.pushkey, user_id),
            )
        ]
        conn.execute(
            "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id != ?",
            (settings.app_id, settings.pushkey, user_id),
        )
    conn.execute(
        f"INSERT OR REPLACE INTO pushers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            user_id,
            settings.app_id,
            settings.pushkey,
            device_id,
            settings.kind,
            settings.app_display_name,
            settings.device_display_name,
            settings.profile_tag,
            settings.lang,
            json.dumps(settings.data, separators=(",", ":"), ensure_ascii=False),
            now_ms,
        ),
    )
    return removed


def delete_pusher(conn: sqlite3.Connection, key: PusherKey) -> bool:
    """Delete one pusher; return whether it existed."""
    cur = conn.execute(
        "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
        (key.user_id, key.app_id, key.pushkey),
    )
    return cur.rowcount > 0


def unread_total(conn: sqlite3.Connection, user_id: str) -> int:
    """The user's unread notifications summed over every room and thread."""
    row = conn.execute(
        "SELECT coalesce(sum(notification_count), 0) FROM push_counts WHERE user_id = ?",
        (user_id,),
    ).fetchone()
    return int(row[0])


def delete_for_user(conn: sqlite3.Connection, user_id: str) -> int:
    """Delete every pusher of a user; return how many there were."""
    return conn.execute("DELETE FROM pushers WHERE user_id = ?", (user_id,)).rowcount
