"""The cache of remote users' device lists, and federated to-device message IDs
(migration 020).

A remote user is *tracked* while they share a room with a local user: their devices
are in ``e2e_remote_devices``, their master and self-signing keys in
``e2e_cross_signing_keys`` (with ours), and ``e2e_remote_users`` holds the last
``stream_id`` applied and whether the list is stale. Functions take a connection and
never commit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from pocketserver.storage.e2e_keys import CHUNK, DeviceKeysRow, encode


@dataclass(frozen=True, slots=True)
class RemoteUser:
    user_id: str
    stream_id: str | None
    stale: bool


@dataclass(frozen=True, slots=True)
class RemoteDevice:
    device_id: str
    display_name: str | None
    keys: dict[str, object] | None


def shares_room_with_local(conn: sqlite3.Connection, user_id: str) -> bool:
    """Whether ``user_id`` is joined to a room that one of our users is joined to."""
    row = conn.execute(
        "SELECT 1 FROM current_state a JOIN current_state b ON b.room_id = a.room_id"
        " WHERE a.type = 'm.room.member' AND a.state_key = ? AND a.membership = 'join'"
        " AND b.type = 'm.room.member' AND b.membership = 'join'"
        " AND b.state_key IN (SELECT name FROM users) LIMIT 1",
        (user_id,),
    ).fetchone()
    return row is not None


def get_user(conn: sqlite3.Connection, user_id: str) -> RemoteUser | None:
    row = conn.execute(
        "SELECT stream_id, stale FROM e2e_remote_users WHERE user_id = ?", (user_id,)
    ).fetchone()
    if row is None:
        return None
    return RemoteUser(user_id, None if row[0] is None else str(row[0]), bool(row[1]))


def tracked_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM e2e_remote_users").fetchone()[0])


def track(conn: sqlite3.Connection, user_id: str, now_ms: int) -> None:
    """Start tracking ``user_id`` (stale until a resync fills the cache)."""
    conn.execute(
        "INSERT INTO e2e_remote_users (user_id, stream_id, stale, updated_ts)"
        " VALUES (?, NULL, 1, ?) ON CONFLICT (user_id) DO NOTHING",
        (user_id, now_ms),
    )


def mark_stale(conn: sqlite3.Connection, user_id: str) -> None:
    conn.execute("UPDATE e2e_remote_users SET stale = 1 WHERE user_id = ?", (user_id,))


def set_synced(conn: sqlite3.Connection, user_id: str, stream_id: str, now_ms: int) -> None:
    conn.execute(
        "UPDATE e2e_remote_users SET stream_id = ?, stale = 0, updated_ts = ? WHERE user_id = ?",
        (stream_id, now_ms, user_id),
    )


def stale_users(conn: sqlite3.Connection, limit: int) -> list[str]:
    """Tracked users whose list must be resynced, least recently updated first."""
    rows = conn.execute(
        "SELECT user_id FROM e2e_remote_users WHERE stale = 1 ORDER BY updated_ts LIMIT ?",
        (limit,),
    )
    return [str(r[0]) for r in rows]


def fresh_users(conn: sqlite3.Connection, user_ids: Collection[str]) -> set[str]:
    """Those of ``user_ids`` whose cached list is up to date."""
    out: set[str] = set()
    items = list(user_ids)
    for i in range(0, len(items), CHUNK):
        chunk = items[i : i + CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT user_id FROM e2e_remote_users WHERE stale = 0 AND user_id IN ({marks})",
            tuple(chunk),
        )
        out.update(str(r[0]) for r in rows)
    return out


def untrack(conn: sqlite3.Connection, user_id: str) -> None:
    """Forget the user's devices and cross-signing keys (they share no room now)."""
    conn.execute("DELETE FROM e2e_remote_users WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM e2e_cross_signing_keys WHERE user_id = ?", (user_id,))


def no_longer_shared(conn: sqlite3.Connection, limit: int) -> list[str]:
    """Tracked users who share no room with a local user any more."""
    rows = conn.execute(
        "SELECT r.user_id FROM e2e_remote_users r WHERE NOT EXISTS ("
        " SELECT 1 FROM current_state a JOIN current_state b ON b.room_id = a.room_id"
        " WHERE a.type = 'm.room.member' AND a.state_key = r.user_id"
        " AND a.membership = 'join' AND b.type = 'm.room.member' AND b.membership = 'join'"
        " AND b.state_key IN (SELECT name FROM users)) LIMIT ?",
        (limit,),
    )
    return [str(r[0]) for r in rows]


def tracked_after_leave(conn: sqlite3.Connection, room_id: str, target: str) -> list[str]:
    """Tracked users whose list a leave of ``target`` from ``room_id`` may have stopped
    sharing: ``target`` if tracked; if ``target`` is local, the room's remote members
    (and those who just left it) who are tracked."""
    rows = conn.execute(
        "SELECT r.user_id FROM e2e_remote_users r WHERE r.user_id = ? OR ("
        " EXISTS (SELECT 1 FROM users WHERE name = ?) AND r.user_id IN ("
        " SELECT state_key FROM current_state WHERE room_id = ? AND type = 'm.room.member'))",
        (target, target, room_id),
    )
    return [str(r[0]) for r in rows]


def _decode(text: str | None) -> dict[str, object] | None:
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


def devices(conn: sqlite3.Connection, user_id: str) -> dict[str, RemoteDevice]:
    rows = conn.execute(
        "SELECT device_id, display_name, key_json FROM e2e_remote_devices WHERE user_id = ?",
        (user_id,),
    )
    return {str(r[0]): RemoteDevice(str(r[0]), r[1], _decode(r[2])) for r in rows}


def set_device(conn: sqlite3.Connection, user_id: str, device: RemoteDevice) -> bool:
    """Store one device; return False if it was stored exactly so already."""
    text = None if device.keys is None else encode(device.keys)
    row = conn.execute(
        "SELECT display_name, key_json FROM e2e_remote_devices WHERE user_id = ? AND device_id = ?",
        (user_id, device.device_id),
    ).fetchone()
    if row is not None and (row[0], row[1]) == (device.display_name, text):
        return False
    conn.execute(
        "INSERT INTO e2e_remote_devices (user_id, device_id, display_name, key_json)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, device_id) DO UPDATE SET"
        " display_name = excluded.display_name, key_json = excluded.key_json",
        (user_id, device.device_id, device.display_name, text),
    )
    return True


def delete_device(conn: sqlite3.Connection, user_id: str, device_id: str) -> bool:
    cur = conn.execute(
        "DELETE FROM e2e_remote_devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
    )
    return cur.rowcount > 0


def replace_devices(conn: sqlite3.Connection, user_id: str, new: Iterable[RemoteDevice]) -> bool:
    """Make the stored list exactly ``new``; return True if anything changed."""
    wanted = {d.device_id: d for d in new}
    changed = False
    for device_id in set(devices(conn, user_id)) - set(wanted):
        changed |= delete_device(conn, user_id, device_id)
    for device in wanted.values():
        changed |= set_device(conn, user_id, device)
    return changed


def device_keys_of(conn: sqlite3.Connection, wanted: dict[str, list[str]]) -> list[DeviceKeysRow]:
    """The cached device keys of ``wanted`` (user ID -> device IDs, ``[]`` for all);
    devices without keys are left out, as for local users."""
    out: list[DeviceKeysRow] = []
    for user_id, device_ids in wanted.items():
        only = set(device_ids)
        for device in devices(conn, user_id).values():
            if device.keys is not None and (not only or device.device_id in only):
                out.append(
                    DeviceKeysRow(user_id, device.device_id, device.keys, device.display_name)
                )
    return out


# --- to-device messages received over federation -----------------------------------------


def first_sight_of_message(
    conn: sqlite3.Connection, origin: str, message_id: str, now_ms: int, max_age_ms: int
) -> bool:
    """Record ``message_id`` of ``origin``; False if it was seen (within ``max_age_ms``)."""
    conn.execute(
        "DELETE FROM to_device_federation_seen WHERE received_ts < ?", (now_ms - max_age_ms,)
    )
    cur = conn.execute(
        "INSERT INTO to_device_federation_seen (origin, message_id, received_ts)"
        " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (origin, message_id, now_ms),
    )
    return cur.rowcount > 0
