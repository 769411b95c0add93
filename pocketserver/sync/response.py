"""What an incremental /sync response's room sections say beyond themselves: the other
users who newly joined (for presence) and which rooms have nothing to show."""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.sync.rooms import RoomSection


def newly_joined_users(join: Mapping[str, object], user_id: str) -> set[str]:
    """Other users whose join (or invite, or knock) the joined rooms' sections carry,
    and who did not leave again in them (Synapse's ``calculate_user_changes``)."""
    users: set[str] = set()
    for section in join.values():
        assert isinstance(section, RoomSection)
        for ev in (*section.state, *section.timeline):
            target = ev.pdu.get("state_key")
            if ev.pdu.get("type") != "m.room.member" or not isinstance(target, str):
                continue
            content = ev.pdu.get("content")
            membership = content.get("membership") if isinstance(content, Mapping) else None
            if membership in ("join", "invite", "knock"):
                users.add(target)
            else:
                users.discard(target)
    users.discard(user_id)
    return users


def drop_empty_rooms(rooms: Mapping[str, object], keep: set[str]) -> None:
    """Incremental syncs leave out joined and left rooms with nothing to show (their
    new events all filtered out): no timeline events, state, ephemeral or account
    data. Unread counts alone do not count, as in Synapse's ``JoinedSyncResult``."""
    for kind in ("join", "leave"):
        section = rooms.get(kind)
        if not isinstance(section, dict):
            continue
        for room_id in [r for r, entry in section.items() if r not in keep and is_empty(entry)]:
            del section[room_id]


def is_empty(entry: object) -> bool:
    if not isinstance(entry, Mapping):
        return False
    for part in ("timeline", "state", "state_after", "ephemeral", "account_data"):
        value = entry.get(part)
        if isinstance(value, Mapping) and value.get("events"):
            return False
    return True
