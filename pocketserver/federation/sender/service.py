"""The federation sender: sends our events and EDUs to the other servers in our rooms
(server-server-api.md "Transactions", "PDUs", "EDUs").

The room writer's listener only notes that an event of ours was stored. One task
(the matcher) reads the events after a persisted position, works out each one's
destinations (:mod:`servers`) and records in SQLite, per destination and room, the
newest event owed, moving the position in the same transaction: a crash or restart
loses nothing, and re-matching after a crash is harmless. Destinations that may be
tried now then get the events in memory and a task (:mod:`queue`), one transaction
in flight each; a destination backing off costs a row per room, nothing in memory.
A destination in memory with nothing to send is dropped.

EDUs: typing, receipts and presence are kept in memory only (see :mod:`edus`);
to-device messages and device list and signing key updates go to an outbox table
first and leave it only when the destination accepted them.

A loop wakes, once a minute, each destination that is owed something and whose
backoff has run out (so after a restart every owed destination catches up), a few
seconds apart as Synapse does.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import trio

from pocketserver.cache import MemoryBudget
from pocketserver.ephemeral.clock import wall_ms
from pocketserver.federation.sender import edus as edu_types
from pocketserver.federation.sender.queue import (
    SHORT_RETRIES_S,
    Destination,
    OwedEvent,
    Transmitter,
)
from pocketserver.federation.sender.servers import RoomServers, server_of
from pocketserver.federation.sender.transport import FederationTransport
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.storage import federation_sender as store
from pocketserver.storage.db import Database
from pocketserver.storage.events import max_stream_ordering

log = logging.getLogger(__name__)

MATCH_BATCH = 200
MATCH_RETRY_S = 10.0
POSITION_WRITE_EVERY = 1000
"""Without events to record, the matching position is written this rarely (re-matching
the events after a stored position is harmless)."""
INTAKE = 1024
"""Volatile EDUs and contacts waiting to be handled; past this they are dropped."""
WAKE_PERIOD_S = 60.0
WAKE_SPACING_S = 2.0
WAKE_PAGE = 100
SMALL_ROOM_SERVERS = 10
"""Receipts in rooms with fewer servers are sent at once; others are trickled."""
RECEIPT_TRICKLE_S = 30.0
KNOWN_UP_CAP = 1024


@dataclass(frozen=True, slots=True)
class SenderStatistics:
    transactions_sent: int
    catch_up_transactions: int
    failed_attempts: int
    destinations_in_memory: int
    pending_pdus: int
    pending_edus: int
    dropped_edus: int


@dataclass(frozen=True, slots=True)
class _Typing:
    room_id: str
    user_id: str
    typing: bool


@dataclass(frozen=True, slots=True)
class _Receipt:
    room_id: str
    receipt_type: str
    user_id: str
    event_ids: list[str]
    data: dict[str, object]


@dataclass(frozen=True, slots=True)
class _Presence:
    states: list[dict[str, object]]
    destinations: frozenset[str] | None
    """None: the servers sharing a room with the (one) user."""


@dataclass(frozen=True, slots=True)
class _Contact:
    server_name: str


_Intake = _Typing | _Receipt | _Presence | _Contact


class FederationSender:
    """See the module docstring. Start :meth:`run` in the server's nursery."""

    def __init__(
        self,
        db: Database,
        room_store: RoomStore,
        server_name: str,
        transport: FederationTransport | None,
        *,
        budget: MemoryBudget | None = None,
        presence_enabled: bool = True,
        now_ms: Callable[[], int] = wall_ms,
        wake_spacing_s: float = WAKE_SPACING_S,
        wake_period_s: float = WAKE_PERIOD_S,
        short_retries: tuple[float, ...] = SHORT_RETRIES_S,
    ) -> None:
        """``transport`` None: owed events are recorded but nothing is sent yet."""
        self._db = db
        self._server_name = server_name
        self._servers = RoomServers(room_store, server_name, budget)
        self._presence_enabled = presence_enabled
        self._now_ms = now_ms
        self._wake_spacing_s = wake_spacing_s
        self._wake_period_s = wake_period_s
        self._tx: Transmitter | None = None
        if transport is not None:
            self._tx = Transmitter(
                db, room_store, transport, server_name, now_ms, short_retries=short_retries
            )
        if self._tx is not None:
            self._tx.on_up = self._mark_up
            self._tx.on_down = self._mark_down
        self._queues: dict[str, Destination] = {}
        self._known_up: OrderedDict[str, None] = OrderedDict()
        self._delayed: OrderedDict[str, None] = OrderedDict()
        self._delayed_added = trio.Event()
        self._new_events = trio.Event()
        self._intake_send, self._intake_receive = trio.open_memory_channel[_Intake](INTAKE)
        self._nursery: trio.Nursery | None = None
        self._dropped_intake = 0

    # --- producers: events ---------------------------------------------------------------

    def on_persisted(self, event: PersistedEvent) -> None:
        """Room writer listener (never blocks): wake the matcher for an accepted live
        event (kind *new*) of ours; backfill and outliers are never sent on."""
        if event.live:
            sender = event.pdu.get("sender")
            if isinstance(sender, str) and server_of(sender) == self._server_name:
                self._new_events.set()

    def on_remote_contact(self, server_name: str) -> None:
        """``server_name`` just made an authenticated request to us: it is up, so its
        backoff ends and what it is owed is sent now (as Synapse). Cheap when it was
        not backing off. Never blocks."""
        if server_name in self._known_up:
            self._known_up.move_to_end(server_name)
            return
        self._offer(_Contact(server_name))

    # --- producers: volatile EDUs (may be lost) ----------------------------------------

    def send_typing(self, room_id: str, user_id: str, typing: bool) -> None:
        """Our user started or stopped typing in a room (``m.typing``). Never blocks."""
        self._offer(_Typing(room_id, user_id, typing))

    def send_receipt(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        event_ids: Sequence[str],
        data: Mapping[str, object],
    ) -> None:
        """Our user's public receipt (``m.receipt``; ``data`` holds ``ts`` and maybe
        ``thread_id``). Private receipts are never sent. Never blocks."""
        if receipt_type == "m.read.private":
            return
        self._offer(_Receipt(room_id, receipt_type, user_id, list(event_ids), dict(data)))

    def send_presence(
        self,
        state: Mapping[str, object],
        destinations: Sequence[str] | None = None,
    ) -> None:
        """Our user's presence (``m.presence`` push entry: ``user_id``, ``presence``,
        ``last_active_ago``, optional ``status_msg`` and ``currently_active``), to
        ``destinations``, by default the servers sharing a room with them. Nothing when
        presence is off. Never blocks."""
        if self._presence_enabled:
            self._offer(
                _Presence([dict(state)], None if destinations is None else frozenset(destinations))
            )

    def send_presence_to(self, destination: str, states: Sequence[Mapping[str, object]]) -> None:
        """Several of our users' presence to one server (a server that just joined a
        room with them). Nothing when presence is off. Never blocks."""
        if self._presence_enabled and states:
            self._offer(_Presence([dict(s) for s in states], frozenset((destination,))))

    def _offer(self, item: _Intake) -> None:
        try:
            self._intake_send.send_nowait(item)
        except trio.WouldBlock:
            self._dropped_intake += 1

    # --- producers: durable EDUs (survive restarts) --------------------------------------

    async def send_to_device(
        self,
        sender: str,
        event_type: str,
        messages: Mapping[str, Mapping[str, object]],
        message_id: str | None = None,
    ) -> None:
        """Queue ``m.direct_to_device`` EDUs for the remote users in ``messages``
        (``{user_id: {device_id or "*": content}}``), one per server. Returns once
        they are stored; local users in ``messages`` are ignored."""
        by_server: dict[str, dict[str, object]] = {}
        for user_id, devices in messages.items():
            server = server_of(user_id)
            if server and server != self._server_name:
                by_server.setdefault(server, {})[user_id] = dict(devices)
        mid = message_id or secrets.token_urlsafe(16)
        rows = [
            (
                server,
                edu_types.DIRECT_TO_DEVICE,
                {"sender": sender, "type": event_type, "message_id": mid, "messages": msgs},
            )
            for server, msgs in by_server.items()
        ]
        await self._store_durable(store.LANE_TO_DEVICE, rows)

    async def send_device_list_update(
        self,
        content: Mapping[str, object],
        destinations: Sequence[str] | None = None,
    ) -> None:
        """Queue an ``m.device_list_update`` (``user_id``, ``device_id``, ``stream_id``,
        ``prev_id``, ...) for ``destinations``, by default the servers sharing a room
        with the user. Returns once it is stored."""
        await self._store_durable(
            store.LANE_DEVICE_LISTS,
            [
                (d, edu_types.DEVICE_LIST_UPDATE, content)
                for d in await self._audience(str(content["user_id"]), destinations)
            ],
        )

    async def send_signing_key_update(
        self,
        content: Mapping[str, object],
        destinations: Sequence[str] | None = None,
    ) -> None:
        """Queue a signing key update (``user_id``, ``master_key`` and/or
        ``self_signing_key``) as both ``m.signing_key_update`` and
        ``org.matrix.signing_key_update`` (as Synapse, for servers that know only the
        unstable name), by default to the servers sharing a room with the user."""
        servers = await self._audience(str(content["user_id"]), destinations)
        rows = [
            (d, t, content)
            for d in servers
            for t in (edu_types.SIGNING_KEY_UPDATE, edu_types.SIGNING_KEY_UPDATE_UNSTABLE)
        ]
        await self._store_durable(store.LANE_DEVICE_LISTS, rows)

    async def _audience(self, user_id: str, destinations: Sequence[str] | None) -> list[str]:
        found = (
            set(destinations)
            if destinations is not None
            else await self._db.read(store.servers_sharing_a_room, user_id)
        )
        found.discard(self._server_name)
        found.discard("")
        return sorted(found)

    async def _store_durable(
        self, lane: int, rows: Sequence[tuple[str, str, Mapping[str, object]]]
    ) -> None:
        if not rows:
            return
        due = await self._db.write(store.add_outbox_edus, lane, rows, self._now_ms())
        for name in due:
            dest = self._destination(name)
            if dest is not None:
                dest.outbox = True
                self._wake(dest)

    # --- running -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Match events, handle EDUs and wake destinations until cancelled."""
        position = await self._db.read(store.matched_position)
        if position is None:  # first start: from now on, not the history
            position = await self._db.read(max_stream_ordering)
            await self._db.write(store.set_matched_position, position)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._match, position)
            nursery.start_soon(self._handle_intake)
            if self._tx is not None:
                nursery.start_soon(self._wake_due)
                nursery.start_soon(self._trickle_receipts)
            task_status.started()

    def statistics(self) -> SenderStatistics:
        counters = self._tx.counters if self._tx is not None else None
        dropped = self._dropped_intake + sum(d.edus.dropped for d in self._queues.values())
        return SenderStatistics(
            transactions_sent=counters.transactions if counters else 0,
            catch_up_transactions=counters.catch_up_transactions if counters else 0,
            failed_attempts=counters.failures if counters else 0,
            destinations_in_memory=len(self._queues),
            pending_pdus=sum(len(d.pdus) for d in self._queues.values()),
            pending_edus=sum(len(d.edus) for d in self._queues.values()),
            dropped_edus=dropped,
        )

    # --- destinations ------------------------------------------------------------------

    def _destination(self, name: str, *, caught_up: bool = False) -> Destination | None:
        """The destination's queue, made if needed (None while nothing is sent)."""
        if self._tx is None:
            return None
        dest = self._queues.get(name)
        if dest is None:
            dest = self._queues[name] = Destination(name, catching_up=not caught_up)
        return dest

    def _wake(self, dest: Destination) -> None:
        if dest.running:
            dest.new_data = True
        elif self._nursery is not None:
            dest.running = True
            self._nursery.start_soon(self._transmit, dest)

    async def _transmit(self, dest: Destination) -> None:
        assert self._tx is not None
        try:
            await self._tx.transmit(dest)
        except Exception:  # a bug must not stop the server; SQLite still holds the work
            log.exception("federation sender: %s failed", dest.name)
            dest.start_catching_up()
        finally:
            dest.running = False
            if dest.idle() and self._queues.get(dest.name) is dest:
                del self._queues[dest.name]

    def _mark_up(self, name: str) -> None:
        self._known_up[name] = None
        self._known_up.move_to_end(name)
        while len(self._known_up) > KNOWN_UP_CAP:
            self._known_up.popitem(last=False)

    def _mark_down(self, name: str) -> None:
        self._known_up.pop(name, None)

    # --- the matcher -------------------------------------------------------------------

    async def _match(self, position: int) -> None:
        while True:
            try:
                await self._match_from(position)
            except Exception:  # a bug must not stop the server: try again later
                log.exception("federation sender: matching events failed")
                await trio.sleep(MATCH_RETRY_S)
                saved: int | None = await self._db.read(store.matched_position)
                position = position if saved is None else saved

    async def _match_from(self, position: int) -> None:
        stored = position
        while True:
            self._new_events = trio.Event()
            events, upto = await self._db.read(store.live_events_after, position, MATCH_BATCH)
            if upto == position:
                await self._new_events.wait()
                continue
            matched: list[tuple[store.LiveEvent, frozenset[str]]] = []
            for ev in events:
                if server_of(ev.sender) == self._server_name:
                    servers = await self._servers.for_event(ev)
                    if servers:
                        matched.append((ev, servers))
            if matched:
                owed: dict[tuple[str, str], int] = {}
                for ev, servers in matched:
                    for server in servers:
                        owed[(server, ev.room_id)] = ev.stream_ordering
                results = await self._db.write(store.record_owed, owed, upto, self._now_ms())
                stored = upto
                self._hand_over(matched, results)
            elif upto - stored >= POSITION_WRITE_EVERY:
                await self._db.write(store.set_matched_position, upto)
                stored = upto
            position = upto

    def _hand_over(
        self, matched: list[tuple[store.LiveEvent, frozenset[str]]], results: list[store.Owed]
    ) -> None:
        """Give the events to the destinations that may be tried now, in order."""
        if self._tx is None:
            return
        state = {r.destination: r for r in results if r.due}
        woken: dict[str, Destination] = {}
        for ev, servers in matched:
            for server in servers:
                info = state.get(server)
                if info is None:
                    continue  # backing off: the owed row is enough
                dest = woken.get(server)
                if dest is None:
                    dest = self._destination(server, caught_up=info.caught_up)
                    assert dest is not None
                    if not dest.running and not dest.pdus:
                        # Nothing in flight: the database knows whether it is behind.
                        dest.catching_up = not info.caught_up
                dest.add_pdu(OwedEvent(ev.event_id, ev.stream_ordering))
                woken[server] = dest
        for dest in woken.values():
            self._wake(dest)

    # --- volatile EDUs and contacts ------------------------------------------------------

    async def _handle_intake(self) -> None:
        async for item in self._intake_receive:
            try:
                await self._handle(item)
            except Exception:
                log.exception("federation sender: handling %r failed", item)

    async def _handle(self, item: _Intake) -> None:
        if isinstance(item, _Contact):
            await self._contact(item.server_name)
            return
        if isinstance(item, _Presence):
            servers = await self._due(
                set(item.destinations)
                if item.destinations is not None
                else await self._db.read(
                    store.servers_sharing_a_room, str(item.states[0]["user_id"])
                )
            )
        else:
            servers = await self._due(await self._db.read(store.joined_servers, item.room_id))
        for name in servers:
            dest = self._destination(name)
            if dest is None:
                return
            if isinstance(item, _Typing):
                dest.edus.add_typing(item.room_id, item.user_id, item.typing)
            elif isinstance(item, _Presence):
                for state in item.states:
                    dest.edus.add_presence(state)
            else:
                dest.edus.add_receipt(
                    item.room_id, item.receipt_type, item.user_id, item.event_ids, item.data
                )
                if len(servers) >= SMALL_ROOM_SERVERS:
                    self._delayed[name] = None
                    self._delayed_added.set()
                    continue
            self._wake(dest)

    async def _due(self, servers: set[str]) -> list[str]:
        servers.discard(self._server_name)
        servers.discard("")
        if not servers or self._tx is None:
            return []
        return await self._db.read(store.due_destinations, servers, self._now_ms())

    async def _contact(self, name: str) -> None:
        timings = await self._db.read(store.retry_timings, name)
        if timings.retry_interval_ms:
            await self._db.write(store.clear_backoff, name)
            log.info("federation: %s contacted us; no longer backing off", name)
            dest = self._destination(name)
            if dest is not None:
                self._wake(dest)
        self._mark_up(name)

    # --- waking ------------------------------------------------------------------------

    async def _wake_due(self) -> None:
        """Wake owed destinations whose backoff ran out (all of them at start)."""
        while True:
            after = ""
            while True:
                names = await self._db.read(
                    store.destinations_with_work, self._now_ms(), after, WAKE_PAGE
                )
                for name in names:
                    dest = self._destination(name)
                    if dest is not None and not dest.running:
                        self._wake(dest)
                        await trio.sleep(self._wake_spacing_s)
                if len(names) < WAKE_PAGE:
                    break
                after = names[-1]
            for dest in list(self._queues.values()):
                if not dest.running and len(dest.edus):
                    self._wake(dest)
            await trio.sleep(self._wake_period_s)

    async def _trickle_receipts(self) -> None:
        """Wake the destinations holding trickled receipts one by one, each within
        ``RECEIPT_TRICKLE_S`` (Synapse's destination wake-up queue): in a big room,
        a receipt is not worth a transaction to every server at once."""
        while True:
            if not self._delayed:
                self._delayed_added = trio.Event()
                await self._delayed_added.wait()
                continue
            name, _ = self._delayed.popitem(last=False)
            dest = self._queues.get(name)
            if dest is not None and dest.edus.has_receipts():
                self._wake(dest)
            await trio.sleep(max(0.05, RECEIPT_TRICKLE_S / (len(self._delayed) + 1)))
