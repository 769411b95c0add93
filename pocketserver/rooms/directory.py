"""Room aliases and the public room directory (client-server API "Room aliases",
"Listing rooms")."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from pocketserver.core.identifiers import is_valid_room_alias
from pocketserver.core.locality import Locality
from pocketserver.core.power_levels import (
    InvalidPowerLevel,
    get_event_send_level,
    get_user_power_level,
)
from pocketserver.errors import MatrixError, forbidden, not_found
from pocketserver.rooms.store import RoomStore
from pocketserver.storage import directory as directory_store


def _now_ms() -> int:
    return int(time.time() * 1000)


class Directory:
    def __init__(
        self,
        store: RoomStore,
        server_name: str,
        *,
        ask_unknown_alias: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        self.server_name = server_name
        self.locality = Locality(server_name)
        self.ask_unknown_alias = ask_unknown_alias
        """Asked about an unknown local alias before answering 404 (application
        services' alias namespaces); True if the alias may exist now."""

    def _check_local(self, alias: str) -> None:
        if not is_valid_room_alias(alias):
            raise MatrixError(400, "M_INVALID_PARAM", f"not a room alias: {alias!r}")
        if not self.locality.is_mine(alias):
            raise MatrixError(400, "M_INVALID_PARAM", "aliases of other servers can't be set here")

    async def check_new_alias(self, alias_name: str) -> str:
        """The full alias for ``room_alias_name`` of createRoom, if valid and free.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM``; 400 ``M_ROOM_IN_USE`` if taken.
        """
        if not alias_name or ":" in alias_name or any(c.isspace() for c in alias_name):
            raise MatrixError(
                400, "M_INVALID_PARAM", "room_alias_name may not contain ':' or spaces"
            )
        alias = f"#{alias_name}:{self.server_name}"
        self._check_local(alias)
        if await self.store.db.read(directory_store.get_alias, alias) is not None:
            raise MatrixError(400, "M_ROOM_IN_USE", f"{alias} is already in use")
        return alias

    async def create_alias(self, alias: str, room_id: str, creator: str) -> None:
        """Raises: MatrixError 409 ``M_UNKNOWN`` if the alias exists, 404 for an unknown room."""
        self._check_local(alias)
        if await self.store.room_version(room_id) is None:
            raise not_found("unknown room")
        created = await self.store.db.write(
            directory_store.insert_alias, alias, room_id, creator, _now_ms()
        )
        if not created:
            raise MatrixError(409, "M_UNKNOWN", f"{alias} already exists")

    async def resolve(self, alias: str) -> str:
        if not is_valid_room_alias(alias):
            raise MatrixError(400, "M_INVALID_PARAM", f"not a room alias: {alias!r}")
        found = await self.store.db.read(directory_store.get_alias, alias)
        ask = self.ask_unknown_alias
        local = self.locality.is_mine(alias)
        if found is None and ask is not None and local and await ask(alias):
            found = await self.store.db.read(directory_store.get_alias, alias)
        if found is None:
            raise not_found(f"room alias {alias} not found")
        return found[0]

    async def delete_alias(self, alias: str, user_id: str, *, is_admin: bool) -> str:
        """Only the alias's creator, a server admin, or a room moderator may delete it.
        Returns the room it pointed at."""
        self._check_local(alias)
        found = await self.store.db.read(directory_store.get_alias, alias)
        if found is None:
            raise not_found(f"room alias {alias} not found")
        room_id, creator = found
        if (
            user_id != creator
            and not is_admin
            and not await self.can_send_state(room_id, user_id, "m.room.canonical_alias")
        ):
            raise forbidden("you may not delete this alias")
        await self.store.db.write(directory_store.delete_alias, alias)
        return room_id

    async def aliases(self, room_id: str) -> list[str]:
        return await self.store.db.read(directory_store.aliases_for_room, room_id)

    async def set_visibility(self, room_id: str, *, public: bool) -> None:
        await self.store.db.write(directory_store.set_published, room_id, public, _now_ms())

    async def is_public(self, room_id: str) -> bool:
        return await self.store.db.read(directory_store.is_published, room_id)

    async def can_send_state(self, room_id: str, user_id: str, event_type: str) -> bool:
        """Whether the user's power level reaches the level for this state event type."""
        state = await self.store.current_state_ids(room_id)
        ids = [state.get(("m.room.power_levels", "")), state.get(("m.room.create", ""))]
        events = await self.store.get_events(i for i in ids if i)
        pl_event = events.get(ids[0] or "")
        create_event = events.get(ids[1] or "")
        if create_event is None:
            return False
        content = pl_event.pdu.get("content") if pl_event else None
        pl = content if isinstance(content, dict) else None
        try:
            level = get_user_power_level(user_id, pl, create_event.pdu)
            needed = get_event_send_level(event_type, "", pl)
        except (InvalidPowerLevel, ValueError):
            return False
        return level >= needed
