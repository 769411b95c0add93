"""What a room looks like from outside: the PublishedRoomsChunk / RoomSummary shape
(data/api/client-server/definitions/public_rooms_chunk.yaml, room_summary.yaml), and
who may see it (space_hierarchy.yaml "rooms": joined, invited, public, knockable,
restricted with a qualifying membership, or world_readable).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pocketserver.core.room_versions import UnsupportedRoomVersion, get_room_version
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore, StateKey
from pocketserver.storage import dag
from pocketserver.storage import state as state_store
from pocketserver.storage import stream as stream_store


def _content(pdu: Mapping[str, object] | None) -> Mapping[str, object]:
    content = pdu.get("content") if pdu is not None else None
    return content if isinstance(content, Mapping) else {}


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """The current state a summary needs, with contents already redacted on read."""

    room_id: str
    room_version: str
    state_ids: dict[StateKey, str]
    contents: dict[StateKey, Mapping[str, object]]
    joined_members: int

    def value(self, etype: str, key: str) -> object:
        return self.contents.get((etype, ""), {}).get(key)

    @property
    def join_rule(self) -> str:
        rule = self.value("m.room.join_rules", "join_rule")
        return rule if isinstance(rule, str) else "invite"

    @property
    def history_visibility(self) -> str:
        hv = self.value("m.room.history_visibility", "history_visibility")
        return hv if isinstance(hv, str) else "shared"

    @property
    def room_type(self) -> str | None:
        rtype = self.value("m.room.create", "type")
        return rtype if isinstance(rtype, str) else None

    def membership(self, user_id: str) -> str | None:
        value = self.contents.get(("m.room.member", user_id), {}).get("membership")
        return value if isinstance(value, str) else None

    def allowed_room_ids(self) -> list[str]:
        if self.join_rule not in ("restricted", "knock_restricted"):
            return []
        allow = self.value("m.room.join_rules", "allow")
        ids: list[str] = []
        for entry in allow if isinstance(allow, list) else []:
            if (
                isinstance(entry, Mapping)
                and entry.get("type") == "m.room_membership"
                and isinstance(entry.get("room_id"), str)
            ):
                ids.append(entry["room_id"])
        return ids


SUMMARY_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
)


async def room_info(
    store: RoomStore, reader: EventReader, room_id: str, user_id: str | None = None
) -> RoomInfo | None:
    """The room's summary state (and ``user_id``'s member event), or None if unknown."""
    version = await store.room_version(room_id)
    if version is None:
        return None
    state = await store.current_state_ids(room_id)
    wanted = {(t, ""): state[(t, "")] for t in SUMMARY_TYPES if (t, "") in state}
    if user_id is not None and ("m.room.member", user_id) in state:
        wanted[("m.room.member", user_id)] = state[("m.room.member", user_id)]
    events = await reader.get_events(wanted.values())
    contents = {k: _content(events[eid].pdu) for k, eid in wanted.items() if eid in events}
    counts = await store.db.read(stream_store.member_counts, room_id)
    return RoomInfo(room_id, version, state, contents, counts.get("join", 0))


def _topic(info: RoomInfo) -> str | None:
    """The plain text topic: the text/plain ``m.topic`` body, else ``topic``."""
    rich = info.value("m.room.topic", "m.topic")
    parts = rich.get("m.text") if isinstance(rich, Mapping) else None
    for part in parts if isinstance(parts, list) else []:
        if (
            isinstance(part, Mapping)
            and part.get("mimetype", "text/plain") == "text/plain"
            and isinstance(part.get("body"), str)
        ):
            return str(part["body"])
    topic = info.value("m.room.topic", "topic")
    return topic if isinstance(topic, str) else None


def public_chunk(info: RoomInfo) -> dict[str, object]:
    """The PublishedRoomsChunk of a room."""
    chunk: dict[str, object] = {
        "room_id": info.room_id,
        "num_joined_members": info.joined_members,
        "world_readable": info.history_visibility == "world_readable",
        "guest_can_join": info.value("m.room.guest_access", "guest_access") == "can_join",
        "join_rule": info.join_rule,
    }
    optional = {
        "name": info.value("m.room.name", "name"),
        "topic": _topic(info),
        "avatar_url": info.value("m.room.avatar", "url"),
        "canonical_alias": info.value("m.room.canonical_alias", "alias"),
        "room_type": info.room_type,
    }
    for key, value in optional.items():
        if isinstance(value, str) and value:
            chunk[key] = value
    return chunk


def room_summary(info: RoomInfo) -> dict[str, object]:
    """The RoomSummary of a room: the chunk plus version, encryption, allowed rooms."""
    summary = public_chunk(info)
    summary["room_version"] = info.room_version
    algorithm = info.value("m.room.encryption", "algorithm")
    if isinstance(algorithm, str):
        summary["encryption"] = algorithm
    allowed = info.allowed_room_ids()
    if allowed:
        summary["allowed_room_ids"] = allowed
    return summary


def _knockable(info: RoomInfo) -> bool:
    try:
        version = get_room_version(info.room_version)
    except UnsupportedRoomVersion:
        return False
    rule = info.join_rule
    return (rule == "knock" and version.knocking) or (
        rule == "knock_restricted" and version.knock_restricted_join_rule
    )


async def can_see(store: RoomStore, info: RoomInfo, user_id: str | None) -> bool:
    """Whether a summary of the room may be shown (space_hierarchy.yaml "rooms");
    ``user_id`` None is an unauthenticated request."""
    if info.join_rule == "public" or info.history_visibility == "world_readable":
        return True
    if _knockable(info):
        return True
    if user_id is None:
        return False
    membership = info.membership(user_id)
    if membership in ("join", "invite"):
        return True
    if membership == "ban":
        return False
    for allowed in info.allowed_room_ids():
        member_id = await store.db.read(
            state_store.get_current_state_event_id, allowed, "m.room.member", user_id
        )
        if member_id is None:
            continue
        member = await store.get_event(member_id)
        if member is not None and _content(member.pdu).get("membership") == "join":
            return True
    return False


async def can_server_see(store: RoomStore, info: RoomInfo, origin: str) -> bool:
    """Whether another server may have the room's summary (server-server
    space_hierarchy.yaml: rooms the server "could feasibly peek/join"): a public,
    knockable or world-readable room, one where a user of ``origin`` is joined or
    invited, or a restricted room one of whose allowed rooms has a user of ``origin``
    joined (as Synapse's ``_is_local_room_accessible`` for an origin)."""
    if info.join_rule == "public" or info.history_visibility == "world_readable":
        return True
    if _knockable(info):
        return True
    if await store.db.read(dag.host_joined_or_invited, info.room_id, origin):
        return True
    for allowed in info.allowed_room_ids():
        if await store.db.read(dag.host_in_room, allowed, origin):
            return True
    return False
