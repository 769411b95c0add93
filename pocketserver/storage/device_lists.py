"""Whose device lists a user should refetch: ``device_lists`` of /sync and /keys/changes.

Spec: client-server-api modules/end_to_end_encryption.md "Tracking the device list
for a user" and "Extensions to /sync". Between two positions a user is told:

- ``changed``: users they share a room with now whose devices, device keys or
  cross-signing keys changed (the device list stream), themselves included; users
  whose changes only they may see (their own user-signing key, what it signed); and
  users who came to share a room with them (either side joined, or another user was
  invited to or knocked on one of their rooms, as Synapse: the events stream);
- ``left``: users who stopped sharing any room with them.

Rooms count whether encrypted or not (the spec's note allows the simpler logic).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

_VISIBLE = "outlier = 0 AND rejected IS NULL AND soft_failed = 0"


@dataclass(frozen=True, slots=True)
class DeviceListDelta:
    changed: list[str]
    left: list[str]


def _joined_rooms(conn: sqlite3.Connection, user_id: str) -> set[str]:
    rows = conn.execute(
        "SELECT room_id FROM current_state"
        " WHERE type = 'm.room.member' AND state_key = ? AND membership = 'join'",
        (user_id,),
    )
    return {str(r[0]) for r in rows}


def _joined_members(conn: sqlite3.Connection, room_id: str) -> set[str]:
    rows = conn.execute(
        "SELECT state_key FROM current_state"
        " WHERE room_id = ? AND type = 'm.room.member' AND membership = 'join'",
        (room_id,),
    )
    return {str(r[0]) for r in rows}


def _member_events(conn: sqlite3.Connection, after: int, upto: int) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT room_id, state_key, json_extract(json, '$.content.membership') FROM events"
        " WHERE stream_ordering > ? AND stream_ordering <= ? AND type = 'm.room.member'"
        f" AND {_VISIBLE} ORDER BY stream_ordering",
        (after, upto),
    )
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def _key_changes(
    conn: sqlite3.Connection, after: int, upto: int, user_id: str
) -> tuple[set[str], set[str]]:
    """(users with changes for all who share a room, users with changes for ``user_id``
    alone) in the window."""
    rows = conn.execute(
        "SELECT DISTINCT user_id, only_for FROM e2e_device_list_changes"
        " WHERE stream_id > ? AND stream_id <= ? AND (only_for IS NULL OR only_for = ?)",
        (after, upto, user_id),
    )
    public: set[str] = set()
    private: set[str] = set()
    for changed, only_for in rows:
        (public if only_for is None else private).add(str(changed))
    return public, private


def delta(
    conn: sqlite3.Connection,
    user_id: str,
    events_after: int,
    events_upto: int,
    lists_after: int,
    lists_upto: int,
) -> DeviceListDelta:
    """The device list changes ``user_id`` should hear of in the two windows
    ``(events_after, events_upto]`` and ``(lists_after, lists_upto]``."""
    my_rooms = _joined_rooms(conn, user_id)
    rooms_of: dict[str, set[str]] = {}

    def shares_room(other: str) -> bool:
        if other not in rooms_of:
            rooms_of[other] = _joined_rooms(conn, other)
        return bool(rooms_of[other] & my_rooms)

    changed: set[str] = set()
    maybe_left: set[str] = set()
    if events_upto > events_after:
        for room_id, target, membership in _member_events(conn, events_after, events_upto):
            if target == user_id:
                members = _joined_members(conn, room_id)
                if membership == "join" and room_id in my_rooms:
                    changed |= members
                elif membership in ("leave", "ban"):
                    maybe_left |= members
            elif room_id in my_rooms:
                if membership in ("join", "invite", "knock"):
                    # Invited and knocking users count too, as in Synapse: a client
                    # encrypting for a room with "invited" history visibility needs
                    # their devices before they join.
                    changed.add(target)
                elif membership in ("leave", "ban"):
                    maybe_left.add(target)
        changed.discard(user_id)
    if lists_upto > lists_after:
        public, private = _key_changes(conn, lists_after, lists_upto, user_id)
        changed |= private | {other for other in public if other == user_id or shares_room(other)}
    left = {other for other in maybe_left if other != user_id and not shares_room(other)}
    return DeviceListDelta(changed=sorted(changed - left), left=sorted(left))
