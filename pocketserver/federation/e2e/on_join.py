"""Our user joins a room with servers new to them: those servers get the user's device
list (issue #10: "device list updates (also when a user joins a room with new
servers)").

A server that shared no room with our user holds no copy of their device list, so the
first thing it learns of their devices would otherwise be the next change. On a join
(a *new* event, not a profile change) we send the servers joined to the room that
share no other room with the user one ``m.device_list_update`` naming the user's
latest device change (server-server-api.md "Device Management"): its ``prev_id`` is
unknown to them, which is the spec's signal to fetch the whole list
(``GET /user/devices``), and a server that did know the list applies it as usual. A
user none of whose devices has keys gets no such update (:func:`latest_update`).

The writer listener only queues ``(user, room, state group before)`` (bounded:
:data:`QUEUE`; past it a join is skipped with a count, the peer still learns the
devices on the next change or when it asks). One task does the reading and hands the
EDU to the federation sender, which stores it durably.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Protocol

from pocketserver.federation.e2e.outbound import _device_update
from pocketserver.rooms.join_queue import JoinQueue
from pocketserver.rooms.store import RoomStore
from pocketserver.storage import e2e_keys as store

log = logging.getLogger(__name__)

QUEUE = 256


class DestinedSender(Protocol):
    async def send_device_list_update(
        self, content: Mapping[str, object], destinations: Sequence[str] | None = None
    ) -> None: ...


def _domain(user_id: str) -> str:
    return user_id.partition(":")[2]


def new_servers(conn: sqlite3.Connection, user_id: str, room_id: str) -> set[str]:
    """Servers joined to ``room_id`` now that share no other room with ``user_id``."""
    in_room = {
        _domain(str(r[0]))
        for r in conn.execute(
            "SELECT state_key FROM current_state"
            " WHERE room_id = ? AND type = 'm.room.member' AND membership = 'join'",
            (room_id,),
        )
    }
    elsewhere = {
        _domain(str(r[0]))
        for r in conn.execute(
            "SELECT DISTINCT o.state_key FROM current_state m JOIN current_state o"
            " ON o.room_id = m.room_id AND o.type = 'm.room.member' AND o.membership = 'join'"
            " WHERE m.type = 'm.room.member' AND m.state_key = ? AND m.membership = 'join'"
            " AND m.room_id != ?",
            (user_id, room_id),
        )
    }
    return in_room - elsewhere - {""}


def latest_update(
    conn: sqlite3.Connection, user_id: str, display_names: bool
) -> dict[str, object] | None:
    """The ``m.device_list_update`` of the user's latest device change, or None (also
    when none of their devices has keys: a server learns nothing from it that
    ``/user/devices`` would list, and the update's ``prev_id`` in the next change
    makes it resync anyway; Synapse sends no update on a join at all)."""
    has_keys = conn.execute(
        "SELECT 1 FROM e2e_device_keys WHERE user_id = ? LIMIT 1", (user_id,)
    ).fetchone()
    if has_keys is None:
        return None
    stream_id = store.last_device_change(conn, user_id)
    if not stream_id:
        return None
    row = conn.execute(
        "SELECT device_id FROM e2e_device_list_changes WHERE user_id = ? AND stream_id = ?",
        (user_id, stream_id),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return _device_update(conn, user_id, str(row[0]), stream_id, display_names)


class DeviceListsOnJoin(JoinQueue):
    """See the module docstring. Register :meth:`on_persisted` with the room writer and
    start :meth:`run` in the server's nursery."""

    def __init__(
        self,
        room_store: RoomStore,
        sender: DestinedSender,
        server_name: str,
        *,
        display_names: bool = False,
    ) -> None:
        self.store = room_store
        self.db = room_store.db
        self.sender = sender
        self.server_name = server_name
        self.display_names = display_names
        super().__init__(QUEUE)

    what = "device list update"

    def wants(self, user_id: str) -> bool:
        return _domain(user_id) == self.server_name  # a join of one of our users

    async def handle(self, user_id: str, room_id: str, before: int | None) -> None:
        if before is not None:
            state = await self.store.group_state(before)
            prior_id = state.get(("m.room.member", user_id))
            prior = await self.store.get_event(prior_id) if prior_id else None
            content = prior.pdu.get("content") if prior is not None else None
            if isinstance(content, dict) and content.get("membership") == "join":
                return  # a profile change, not a join
        servers = await self.db.read(new_servers, user_id, room_id)
        servers.discard(self.server_name)
        if not servers:
            return
        update = await self.db.read(latest_update, user_id, self.display_names)
        if update is not None:
            await self.sender.send_device_list_update(update, sorted(servers))
