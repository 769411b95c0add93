"""Room upgrades (client-server-api/modules/room_upgrades.md "Server behaviour").

1. the user must be allowed to send ``m.room.tombstone`` in the old room;
2. a new room is created with ``predecessor`` (and the old room's ``type``);
3. the transferable state is copied (server ACLs, encryption, name, avatar, topic,
   guest access, history visibility, join rules, power levels; also space children
   and bans, as Synapse does);
4. local aliases move, with the canonical alias; a published room stays published;
5. the old room gets its tombstone;
6. the old room's power levels are raised so that only moderators may talk or invite.

While the new room is set up, the upgrading user's level is raised to what the
copied state needs; the old power levels are put back at the end (Synapse does the
same). Room v12 (room_upgrades.md notes): creators are the upgrading user plus the
request's ``additional_creators`` and are kept out of ``users``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pocketserver.core.power_levels import get_room_creators
from pocketserver.core.room_versions import RoomVersion, UnsupportedRoomVersion, get_room_version
from pocketserver.errors import MatrixError, forbidden
from pocketserver.rooms import building
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.directory import Directory
from pocketserver.rooms.locks import KeyedLocks
from pocketserver.rooms.reading import ReadEvent
from pocketserver.rooms.store import StateKey
from pocketserver.storage import upgrades as upgrade_store

log = logging.getLogger(__name__)

COPIED_TYPES = (
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
)
COPIED_KEYED_TYPES = ("m.space.child",)
TOMBSTONE_BODY = "This room has been replaced"


def _content(pdu: Mapping[str, object] | None) -> dict[str, object]:
    content = pdu.get("content") if pdu is not None else None
    return dict(content) if isinstance(content, Mapping) else {}


def _int_level(value: object, default: int) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


def _clean_levels(content: Mapping[str, object]) -> dict[str, object]:
    """Power levels with integer values only (v10+ rejects strings)."""
    out: dict[str, object] = {}
    for key, value in content.items():
        if key in ("users", "events", "notifications") and isinstance(value, Mapping):
            out[key] = {k: _int_level(v, 0) for k, v in value.items()}
        elif key in ("users", "events", "notifications"):
            continue
        elif key in (
            "ban",
            "kick",
            "redact",
            "invite",
            "events_default",
            "state_default",
            "users_default",
        ):
            out[key] = _int_level(value, 0)
        else:
            out[key] = value
    return out


def _needed_level(levels: Mapping[str, object]) -> int:
    """The level that lets the upgrading user send every copied state event."""
    events = levels.get("events")
    values = [_int_level(levels.get("state_default", 50), 50), 100]
    if isinstance(events, Mapping):
        values += [_int_level(v, 0) for v in events.values()]
    return max(values)


def _join_rules(content: dict[str, object], version: RoomVersion) -> dict[str, object]:
    """Join rules the new version accepts; ``restricted`` keeps its allow list."""
    rule = content.get("join_rule")
    supported = (
        rule in ("public", "invite", "private")
        or (rule == "knock" and version.knocking)
        or (rule == "restricted" and version.restricted_join_rule)
        or (rule == "knock_restricted" and version.knock_restricted_join_rule)
    )
    if not supported:
        return {"join_rule": "invite"}
    return content


def _tombstone(new_room: str) -> dict[str, object]:
    return {"body": TOMBSTONE_BODY, "replacement_room": new_room}


@dataclass(frozen=True, slots=True)
class _OldState:
    """The old room's current state as the upgrade found it."""

    state: Mapping[StateKey, str]
    events: Mapping[str, ReadEvent]

    def content_of(self, key: StateKey) -> dict[str, object] | None:
        eid = self.state.get(key)
        found = self.events.get(eid) if eid is not None else None
        return _content(found.pdu) if found is not None else None

    def local_members(self, server_name: str) -> list[str]:
        """This server's users joined to the old room."""
        suffix = f":{server_name}"
        return sorted(
            key
            for (etype, key), eid in self.state.items()
            if etype == "m.room.member"
            and key.endswith(suffix)
            and eid in self.events
            and _content(self.events[eid].pdu).get("membership") == "join"
        )

    def create_pdu(self) -> Mapping[str, object]:
        create = self.events.get(self.state.get(("m.room.create", ""), ""))
        return create.pdu if create is not None else {}


@dataclass(slots=True)
class _NewRoom:
    """The replacement room as it is set up."""

    user_id: str
    version: RoomVersion
    old_version: RoomVersion
    member_content: Mapping[str, object]
    room_id: str = ""
    final_levels: dict[str, object] = field(default_factory=dict)
    boosted: dict[str, object] = field(default_factory=dict)


class RoomUpgrader:
    def __init__(
        self,
        room_client: RoomClient,
        directory: Directory,
        *,
        after_upgrade: Callable[[str, str, list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.client = room_client
        self.writer = room_client.writer
        self.store = room_client.store
        self.directory = directory
        self._locks = KeyedLocks()
        self.after_upgrade = after_upgrade
        """Called with (old room, new room, local members joined to the old room) to
        carry over their own state (m.direct, tags, push rules; account_data/)."""

    async def upgrade(
        self,
        user_id: str,
        room_id: str,
        new_version: str,
        additional_creators: Sequence[str] = (),
        member_content: Mapping[str, object] | None = None,
    ) -> str:
        """Upgrade ``room_id`` to ``new_version`` as ``user_id``; return the new room's ID.

        Raises:
            MatrixError: 400 ``M_UNSUPPORTED_ROOM_VERSION``; 403 ``M_FORBIDDEN`` if the
                user is not joined or may not send ``m.room.tombstone``; 404 unknown room.
        """
        try:
            version = get_room_version(new_version)
        except UnsupportedRoomVersion:
            raise MatrixError(
                400, "M_UNSUPPORTED_ROOM_VERSION", f"unsupported room version {new_version!r}"
            ) from None
        async with self._locks(room_id):
            old_version = await self.store.room_version(room_id)
            if old_version is None:
                raise MatrixError(404, "M_NOT_FOUND", "unknown room")
            membership, _ = await self.client.membership_of(room_id, user_id)
            if membership != "join":
                raise forbidden("you are not joined to this room")
            if not await self.directory.can_send_state(room_id, user_id, "m.room.tombstone"):
                raise forbidden("you may not upgrade this room")
            return await self._upgrade(
                user_id,
                room_id,
                old_version,
                version,
                list(additional_creators),
                member_content or {},
            )

    async def _upgrade(
        self,
        user_id: str,
        old_room: str,
        old_version: str,
        version: RoomVersion,
        additional_creators: list[str],
        member_content: Mapping[str, object],
    ) -> str:
        state = await self.store.current_state_ids(old_room)
        events = await self.client.reader.get_events(state.values())
        old = _OldState(state, events)
        new = _NewRoom(user_id, version, get_room_version(old_version), member_content)
        if version.hydra:
            # A v12 room's ID is its create event's hash, so the create event cannot
            # name a tombstone that names the room: Synapse leaves event_id out too.
            await self._set_up(new, old_room, old, additional_creators, None)
            await self.writer.send_event(
                old_room, user_id, "m.room.tombstone", _tombstone(new.room_id), ""
            )
        else:
            # room_upgrades.md: predecessor.event_id is "the last known event in the old
            # room"; Synapse names the tombstone, built (not yet sent) before the new
            # room so that its ID is known, and sent once the new room is set up.
            new.room_id = building.new_room_id(self.writer.server_name)
            async with self.writer.held_event(
                old_room, user_id, "m.room.tombstone", _tombstone(new.room_id), ""
            ) as tombstone_id:
                await self._set_up(new, old_room, old, additional_creators, tombstone_id)
        await self._move_aliases(
            old_room, new.room_id, user_id, old.content_of(("m.room.canonical_alias", ""))
        )
        if new.boosted != new.final_levels:
            await self.writer.send_event(
                new.room_id, user_id, "m.room.power_levels", new.final_levels, ""
            )
        await self._lock_old_room(old_room, user_id, old.content_of(("m.room.power_levels", "")))
        if await self.directory.is_public(old_room):
            await self.directory.set_visibility(old_room, public=False)
            await self.directory.set_visibility(new.room_id, public=True)
        if self.after_upgrade is not None:
            await self.after_upgrade(
                old_room, new.room_id, old.local_members(self.writer.server_name)
            )
        return new.room_id

    async def _set_up(
        self,
        new: _NewRoom,
        old_room: str,
        old: _OldState,
        additional_creators: list[str],
        tombstone_id: str | None,
    ) -> None:
        """Create the new room, join it, and copy the old room's state (with the
        upgrading user's level boosted; ``new.final_levels`` is what it ends with)."""
        user_id, version = new.user_id, new.version
        old_create = old.create_pdu()
        predecessor: dict[str, object] = {"room_id": old_room}
        if tombstone_id is not None:
            predecessor["event_id"] = tombstone_id
        creation: dict[str, object] = {"predecessor": predecessor}
        room_type = _content(old_create).get("type")
        if isinstance(room_type, str):
            creation["type"] = room_type
        if _content(old_create).get("m.federate") is False:
            creation["m.federate"] = False
        creators = {user_id}
        if version.hydra:
            extra = [u for u in dict.fromkeys(additional_creators) if u != user_id]
            if extra:
                creation["additional_creators"] = extra
            creators.update(extra)
        created = await self.writer.create_room(
            version.identifier, user_id, creation, room_id=new.room_id or None
        )
        new.room_id = new_room = created.room_id
        send = self.writer.send_event
        await send(
            new_room,
            user_id,
            "m.room.member",
            {**new.member_content, "membership": "join"},
            user_id,
        )
        new.final_levels = self._new_levels(
            old.content_of(("m.room.power_levels", "")),
            old_create,
            creators,
            version,
            new.old_version,
            user_id,
        )
        boosted = dict(new.final_levels)
        if not version.hydra:
            users = dict(boosted.get("users") or {})  # type: ignore[call-overload]
            needed = _needed_level(boosted)
            if _int_level(users.get(user_id), 0) < needed:
                users[user_id] = needed
            boosted["users"] = users
        new.boosted = boosted
        await send(new_room, user_id, "m.room.power_levels", boosted, "")
        await self._copy_state(new_room, user_id, old, version)

    async def _copy_state(
        self, new_room: str, user_id: str, old: _OldState, version: RoomVersion
    ) -> None:
        for etype in COPIED_TYPES:
            found = old.content_of((etype, ""))
            if found is None and etype == "m.room.guest_access":
                # No event means forbidden (guest_access.md; public_chat rooms have
                # none): say so in the new room, which as in Synapse always has one
                # (SyTest 60version_upgrade counts it).
                found = {"guest_access": "forbidden"}
            if found is None:
                continue
            if etype == "m.room.join_rules":
                found = _join_rules(found, version)
            await self._try_send(new_room, user_id, etype, found, "")
        for (etype, state_key), _ in sorted(old.state.items()):
            if etype in COPIED_KEYED_TYPES:
                found = old.content_of((etype, state_key))
                if found:
                    await self._try_send(new_room, user_id, etype, found, state_key)
        await self._copy_bans(new_room, user_id, old.state, old.events)

    def _new_levels(
        self,
        old: Mapping[str, object] | None,
        old_create: Mapping[str, object],
        creators: set[str],
        version: RoomVersion,
        old_version: RoomVersion,
        user_id: str,
    ) -> dict[str, object]:
        levels = _clean_levels(old or {})
        users = dict(levels.get("users") or {})  # type: ignore[call-overload]
        if version.hydra:
            for creator in creators:
                users.pop(creator, None)
        else:
            # Creators of a v12 room had unlimited power and are not in ``users``.
            events = levels.get("events")
            event_levels = events.values() if isinstance(events, Mapping) else ()
            top = max([100, *(_int_level(v, 0) for v in [*users.values(), *event_levels])])
            if old_version.hydra:
                for creator in get_room_creators(old_create, old_version):
                    users[creator] = top
            if old is None:
                users[user_id] = top
        levels["users"] = users
        return levels

    async def _try_send(
        self, room_id: str, user_id: str, etype: str, content: Mapping[str, object], key: str
    ) -> None:
        try:
            await self.writer.send_event(room_id, user_id, etype, content, key)
        except MatrixError as e:
            log.info("upgrade: not copying %s to %s: %s", etype, room_id, e.error)

    async def _copy_bans(
        self,
        new_room: str,
        user_id: str,
        state: Mapping[StateKey, str],
        events: Mapping[str, ReadEvent],
    ) -> None:
        for (etype, target), eid in state.items():
            if etype != "m.room.member" or target == user_id or eid not in events:
                continue
            pdu = events[eid].pdu
            if _content(pdu).get("membership") == "ban":
                content: dict[str, object] = {"membership": "ban"}
                reason = _content(pdu).get("reason")
                if isinstance(reason, str):
                    content["reason"] = reason
                await self._try_send(new_room, user_id, "m.room.member", content, target)

    async def _move_aliases(
        self,
        old_room: str,
        new_room: str,
        user_id: str,
        canonical: dict[str, object] | None,
    ) -> None:
        await self.store.db.write(upgrade_store.move_aliases, old_room, new_room)
        if not canonical:
            return
        moved: dict[str, object] = {}
        for key in ("alias", "alt_aliases"):
            if key in canonical:
                moved[key] = canonical[key]
        if moved:
            await self._try_send(new_room, user_id, "m.room.canonical_alias", moved, "")
            left = {k: v for k, v in canonical.items() if k not in ("alias", "alt_aliases")}
            await self._try_send(old_room, user_id, "m.room.canonical_alias", left, "")

    async def _lock_old_room(
        self, old_room: str, user_id: str, levels: dict[str, object] | None
    ) -> None:
        """room_upgrades.md step 6: events_default and invite to max(50, users_default + 1)."""
        if levels is None:
            return
        floor = max(50, _int_level(levels.get("users_default", 0), 0) + 1)
        changed = dict(levels)
        for key in ("events_default", "invite"):
            if _int_level(changed.get(key, 0), 0) < floor:
                changed[key] = floor
        if changed != levels:
            await self._try_send(old_room, user_id, "m.room.power_levels", changed, "")
