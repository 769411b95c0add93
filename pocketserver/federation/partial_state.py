"""Partial-state joins, the joining side (issue #11; server-server-api.md "Joining
Rooms", joins-v2.yaml ``omit_members``, MSC3706/MSC3902).

A join asks for the state without the members (``omit_members=true``). When the
resident answers ``members_omitted: true``, the room is usable at once: the join is
stored on the partial state (every non-member state event, plus the heroes the
resident chose), /sync shows it, our user reads and sends. This service then fills
in the members in the background:

- ``GET /v1/state/{roomId}?event_id=<our join>`` (the state before the join, which
  is what the partial state stood for) from the server we joined through, then from
  the others of ``servers_in_room`` when one fails; the answer is streamed, checked
  and stored in bounded batches like a join's (federation/join_answer.py);
- the accepted state events the partial state lacked are added to the room's state
  groups since the join and to its current state in one transaction, under the
  room's lock (:meth:`RoomWriter.complete_partial_state`).

It is resumable: the room's row (storage/partial_state.py) is written before the join
is stored and deleted in the transaction that completes the room, so a restart finds
every room still partial and starts its resync again (events stored by the
interrupted attempt are not stored twice: the writer skips what it holds). When every
server fails, the room is tried again after :data:`RETRY_S`.

While a room is partial, the writer authorises incoming events against the partial
state plus their own auth events and does not soft-fail them (as Synapse), and
``/members`` waits for the resync (:meth:`wait_full_state`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from urllib.parse import quote

import trio

from pocketserver.core.events import EventFormatError
from pocketserver.federation.client import LONG_TIMEOUT_S
from pocketserver.federation.errors import FederationError
from pocketserver.federation.join_answer import AnswerIncomplete, StagedAnswer
from pocketserver.federation.json_items import JsonStreamError
from pocketserver.federation.keyring import Keyring
from pocketserver.federation.requests import StreamingRequests
from pocketserver.rooms.store import StateKey
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import events as event_store
from pocketserver.storage import partial_state as partial_store
from pocketserver.storage.db import Database
from pocketserver.storage.partial_state import PartialRoom

log = logging.getLogger(__name__)

RETRY_S = 60.0
"""A room whose resync failed with every server is tried again after this."""
STATE_MAX_BYTES = 1 << 30
QUEUE = 64
"""Rooms waiting for a resync (more wait for the next scan)."""


class PartialStateResync:
    """The background resync of partial-state rooms (see the module docstring)."""

    def __init__(
        self,
        writer: RoomWriter,
        keyring: Keyring,
        client: StreamingRequests,
        server_name: str,
        *,
        retry_s: float = RETRY_S,
    ) -> None:
        self.writer = writer
        self.keyring = keyring
        self.client = client
        self.server_name = server_name
        self.retry_s = retry_s
        self._send, self._receive = trio.open_memory_channel[str](QUEUE)
        self._done: dict[str, trio.Event] = {}
        self.completed = 0

    @property
    def db(self) -> Database:
        return self.writer.store.db

    def is_partial(self, room_id: str) -> bool:
        return room_id in self.writer.store.partial_rooms

    async def mark_partial(
        self, room_id: str, join_event_id: str, room_version: str, servers: Sequence[str]
    ) -> None:
        """Before the join is stored: remember the room as partial (in the database
        and in the writer, which then authorises the room's events as partial)."""
        order = [s for s in dict.fromkeys(servers) if s and s != self.server_name]
        await self.db.write(
            partial_store.add_room,
            room_id,
            join_event_id,
            room_version,
            order,
            int(time.time() * 1000),
        )
        self.writer.store.partial_rooms[room_id] = tuple(order)
        self._done.setdefault(room_id, trio.Event())

    async def unmark(self, room_id: str) -> None:
        """The join failed after :meth:`mark_partial`."""
        await self.db.write(partial_store.remove_room, room_id)
        self.writer.store.partial_rooms.pop(room_id, None)
        self._finished(room_id)

    def start(self, room_id: str) -> None:
        """Queue the room's resync (a full queue: the next scan takes it)."""
        try:
            self._send.send_nowait(room_id)
        except trio.WouldBlock:
            log.info("resync queue full; %s waits for the next scan", room_id)

    async def wait_full_state(self, room_id: str, timeout_s: float) -> bool:
        """Wait until the room's state is complete (True) or ``timeout_s`` passed."""
        if room_id not in self.writer.store.partial_rooms:
            return True
        event = self._done.setdefault(room_id, trio.Event())
        with trio.move_on_after(timeout_s):
            await event.wait()
        return room_id not in self.writer.store.partial_rooms

    def _finished(self, room_id: str) -> None:
        event = self._done.pop(room_id, None)
        if event is not None:
            event.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resync the partial rooms left from before a restart, then each new one;
        every :attr:`retry_s` the rooms still partial are queued again."""
        for room in await self.db.read(partial_store.rooms):
            self.writer.store.partial_rooms[room.room_id] = tuple(room.servers)
            self._done.setdefault(room.room_id, trio.Event())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._rescan)
            task_status.started()
            async for room_id in self._receive:
                await self._resync_queued(room_id)

    async def _rescan(self) -> None:
        while True:
            for room in await self.db.read(partial_store.rooms):
                self.start(room.room_id)
            await trio.sleep(self.retry_s)

    async def _resync_queued(self, room_id: str) -> None:
        rows = {r.room_id: r for r in await self.db.read(partial_store.rooms)}
        room = rows.get(room_id)
        if room is None:
            return  # done already (queued twice)
        join = await self.writer.store.get_event(room.join_event_id)
        if join is None:  # the join never got stored (a crash in between)
            await self.unmark(room_id)
            return
        for server in room.servers:
            try:
                added = await self._resync_from(room, server)
            except (
                FederationError,
                JsonStreamError,
                AnswerIncomplete,
                EventFormatError,
            ) as e:
                log.info("resync of %s via %s failed: %s", room_id, server, e)
                continue
            self.completed += 1
            self._finished(room_id)
            log.info("%s has its full state (%d entries added) via %s", room_id, added, server)
            return
        log.warning("resync of %s failed via every server; retrying later", room_id)

    async def _resync_from(self, room: PartialRoom, server: str) -> int:
        path = f"/_matrix/federation/v1/state/{quote(room.room_id, safe='')}"
        database = self.db.path
        async with StagedAnswer.beside(
            database, self.keyring, room.room_id, room.room_version, state_array="pdus"
        ) as answer:
            async with self.client.stream(
                "GET",
                server,
                path,
                query={"event_id": room.join_event_id},
                timeout_s=LONG_TIMEOUT_S,
                max_size=STATE_MAX_BYTES,
            ) as response:
                await answer.read_stream(response.aiter_bytes())
            full = await answer.store(self.writer, server)
        join = await self.writer.store.get_event(room.join_event_id)
        assert join is not None
        partial = await self.writer.store.group_state(join.state_before)
        missing: dict[StateKey, str] = {k: v for k, v in full.items() if k not in partial}
        members = [eid for (t, _), eid in missing.items() if t == "m.room.member"]
        memberships = await self.db.read(event_store.memberships_of, members)
        return await self.writer.complete_partial_state(
            room.room_id, room.join_event_id, missing, memberships
        )
