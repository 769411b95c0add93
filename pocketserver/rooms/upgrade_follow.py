"""Following a room upgrade made on another server.

When a user of ours joins a room held elsewhere whose ``m.room.create`` names a
``predecessor`` (client-server-api/modules/room_upgrades.md), this server may hold the
old room too: its aliases, its place in our public room directory and our users' own
state for it (``m.direct``, tags, push rules) are what our users had for the room, and
they follow it to the new one. The spec leaves this to servers; Synapse does it
(``FederationHandler.do_invite_join`` then
``RoomMemberHandler.transfer_room_state_on_room_upgrade``) and clients and SyTest
(30rooms/60version_upgrade.pl, 42tags.pl) rely on it.

The new room's word is not taken for it: as Synapse, the upgrade is followed only when
one of our users is still joined to the old room and the old room's current
``m.room.tombstone`` names the new room as its ``replacement_room``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from pocketserver.core.locality import Locality
from pocketserver.rooms.directory import Directory
from pocketserver.rooms.store import RoomStore
from pocketserver.storage import dag, event_stream
from pocketserver.storage import upgrades as upgrade_store

log = logging.getLogger(__name__)

Transfer = Callable[[str, str, list[str]], Awaitable[None]]
"""(old room, new room, local users joined to the old room): carries their own state
(account_data/room_upgrade.py ``UpgradeTransfer.transfer``)."""


def _content(pdu: Mapping[str, object] | None) -> Mapping[str, object]:
    content = pdu.get("content") if pdu is not None else None
    return content if isinstance(content, Mapping) else {}


class UpgradeFollower:
    """See the module docstring."""

    def __init__(
        self, store: RoomStore, directory: Directory, server_name: str, transfer: Transfer
    ) -> None:
        self._store = store
        self._directory = directory
        self._locality = Locality(server_name)
        self._transfer = transfer

    async def after_remote_join(self, room_id: str) -> None:
        """Our server has just joined ``room_id`` through another server: carry the
        old room's aliases, directory entry and users' state over if it replaces a
        room held here (see the module docstring). Never raises for a room that is
        not an upgrade."""
        old_room = await self.verified_predecessor(room_id)
        if old_room is not None:
            await self.carry_over(old_room, room_id)

    async def verified_predecessor(self, room_id: str) -> str | None:
        """The old room ``room_id`` replaces, if the old room (held here, one of our
        users joined) agrees through its tombstone; else None."""
        predecessor = _content(await self._state_pdu(room_id, "m.room.create")).get("predecessor")
        old_room = predecessor.get("room_id") if isinstance(predecessor, Mapping) else None
        if not isinstance(old_room, str) or old_room == room_id:
            return None
        server = self._locality.server_name
        if not await self._store.db.read(dag.host_in_room, old_room, server):
            log.info("upgrade of %s into %s not followed: not in the old room", old_room, room_id)
            return None
        tombstone = _content(await self._state_pdu(old_room, "m.room.tombstone"))
        if tombstone.get("replacement_room") != room_id:
            log.info(
                "upgrade of %s into %s not followed: the old room's tombstone disagrees",
                old_room,
                room_id,
            )
            return None
        return old_room

    async def carry_over(self, old_room: str, new_room: str) -> None:
        """Our users' state, the public directory entry and our aliases move from
        ``old_room`` to ``new_room`` (Synapse's ``transfer_room_state_on_room_upgrade``)."""
        log.info("following the upgrade of %s to %s", old_room, new_room)
        members = await self._store.db.read(event_stream.joined_members, old_room)
        await self._transfer(old_room, new_room, [u for u in members if self._locality.is_mine(u)])
        if await self._directory.is_public(old_room):
            await self._directory.set_visibility(old_room, public=False)
            await self._directory.set_visibility(new_room, public=True)
        await self._store.db.write(upgrade_store.move_aliases, old_room, new_room)

    async def _state_pdu(self, room_id: str, event_type: str) -> Mapping[str, object] | None:
        state = await self._store.current_state_ids(room_id)
        event_id = state.get((event_type, ""))
        if event_id is None:
            return None
        found = await self._store.get_events([event_id])
        event = found.get(event_id)
        return event.pdu if event is not None else None
