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

Synapse looks only when it joins the new room, so a join that overtakes the tombstone
(both come from the upgrading server at about the same time) moves nothing there.
Here the tombstone's arrival looks too (a room writer listener, and a bounded queue
worked by :meth:`UpgradeFollower.run`): if we are in the replacement room already, the
carry-over happens then. Doing it twice changes nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import trio

from pocketserver.core.locality import Locality
from pocketserver.rooms.directory import Directory
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.storage import dag, event_stream
from pocketserver.storage import upgrades as upgrade_store

log = logging.getLogger(__name__)

TOMBSTONE = "m.room.tombstone"
QUEUE_SIZE = 64
"""Tombstones from other servers waiting to be looked at; more are dropped (logged)."""

Transfer = Callable[[str, str, list[str]], Awaitable[None]]
"""(old room, new room, local users joined to the old room): carries their own state
(account_data/room_upgrade.py ``UpgradeTransfer.transfer``)."""


def _content(pdu: Mapping[str, object] | None) -> Mapping[str, object]:
    content = pdu.get("content") if pdu is not None else None
    return content if isinstance(content, Mapping) else {}


@dataclass(frozen=True, slots=True)
class UpgradeFollowerStatistics:
    tombstones_queued: int
    tombstones_dropped: int
    tombstones_handled: int
    upgrades_followed: int


class UpgradeFollower:
    """See the module docstring."""

    def __init__(
        self, store: RoomStore, directory: Directory, server_name: str, transfer: Transfer
    ) -> None:
        self._store = store
        self._directory = directory
        self._locality = Locality(server_name)
        self._transfer = transfer
        self._send, self._receive = trio.open_memory_channel[tuple[str, str]](QUEUE_SIZE)
        self._dropped = self._handled = self._followed = 0

    def statistics(self) -> UpgradeFollowerStatistics:
        return UpgradeFollowerStatistics(
            tombstones_queued=self._send.statistics().current_buffer_used,
            tombstones_dropped=self._dropped,
            tombstones_handled=self._handled,
            upgrades_followed=self._followed,
        )

    def on_persisted(self, event: PersistedEvent) -> None:
        """Room writer listener (never blocks): queue another server's live tombstone
        that became the room's state."""
        pdu = event.pdu
        if not (event.live and event.state_changed and pdu.get("type") == TOMBSTONE):
            return
        sender = pdu.get("sender")
        content = _content(pdu)
        new_room = content.get("replacement_room")
        if pdu.get("state_key") != "" or not isinstance(new_room, str):
            return
        if not isinstance(sender, str) or self._locality.is_mine(sender):
            return  # our own upgrades carry over in rooms/upgrade.py
        try:
            self._send.send_nowait((event.room_id, new_room))
        except trio.WouldBlock:
            self._dropped += 1
            log.warning("upgrade queue full: the tombstone of %s is not looked at", event.room_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Look at the queued tombstones until cancelled."""
        task_status.started()
        async for old_room, new_room in self._receive:
            try:
                await self.after_tombstone(old_room, new_room)
            except Exception:  # one room's failure must not stop the others
                log.exception("following the upgrade of %s failed", old_room)
            self._handled += 1

    async def after_tombstone(self, old_room: str, new_room: str) -> None:
        """``old_room``'s tombstone names ``new_room``: carry over if we are in the new
        room already and it names ``old_room`` as its predecessor."""
        server = self._locality.server_name
        if not await self._store.db.read(dag.host_in_room, new_room, server):
            return  # the join, if any, will look
        if await self.verified_predecessor(new_room) == old_room:
            await self.carry_over(old_room, new_room)

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
        self._followed += 1
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
