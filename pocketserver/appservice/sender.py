"""Pushing events to application services (application service API, "Pushing events"):
``PUT /_matrix/app/v1/transactions/{txnId}``.

The room writer's listener only notes that new events exist. One task matches the
events after a persisted stream position against each service's namespaces and queues
the matches in SQLite (position and queue move in one transaction), so nothing is
lost across restarts or while a service is down. One task per service sends its
queue, one transaction in flight, retrying the same transaction ID with exponential
backoff until the service answers 2xx.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

import trio

from pocketserver.appservice.client import app_path
from pocketserver.appservice.registration import AppService
from pocketserver.appservice.service import AppServices
from pocketserver.net.backoff import Backoff
from pocketserver.rooms.client_events import client_event
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.storage import appservice as store
from pocketserver.storage import directory as directory_store
from pocketserver.storage.db import Database
from pocketserver.storage.events import max_stream_ordering

log = logging.getLogger(__name__)

MATCH_BATCH = 200
TXN_EVENTS = 100
BACKOFF = Backoff(minimum=1.0, maximum=300.0)


@dataclass(frozen=True, slots=True)
class SenderStatistics:
    transactions_sent: int
    failed_attempts: int


class TransactionSender:
    def __init__(self, appservices: AppServices, db: Database, reader: EventReader) -> None:
        self._appservices = appservices
        self._db = db
        self._reader = reader
        self._pushable = tuple(s for s in appservices.all if s.url is not None)
        self._new_events = trio.Event()
        self._queued = {s.id: trio.Event() for s in self._pushable}
        self._sent = 0
        self._failed = 0

    def on_persisted(self, event: PersistedEvent) -> None:
        """Room writer listener (never blocks): wake the matcher."""
        if self._pushable and event.live:  # not backfill or outliers (as Synapse)
            self._new_events.set()

    def statistics(self) -> SenderStatistics:
        return SenderStatistics(self._sent, self._failed)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self._pushable:
            task_status.started()
            return
        position = await self._db.read(store.matched_position)
        if position is None:  # first start with services: from now on, not the history
            position = await self._db.read(max_stream_ordering)
            await self._db.write(store.set_matched_position, position)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._match, position)
                for service in self._pushable:
                    nursery.start_soon(self._send_queue, service)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self._appservices.client.aclose()

    # --- matching --------------------------------------------------------------------

    async def _match(self, position: int) -> None:
        while True:
            self._new_events = trio.Event()
            events = await self._db.read(store.events_after, position, MATCH_BATCH)
            if not events:
                await self._new_events.wait()
                continue
            items = await self._db.read(self._interested, events)
            position = events[-1].stream_ordering
            await self._db.write(store.enqueue, items, position)
            for service_id in {i[0] for i in items}:
                self._queued[service_id].set()

    def _interested(
        self, conn: sqlite3.Connection, events: list[store.NewEvent]
    ) -> list[tuple[str, str]]:
        rooms: dict[str, tuple[list[str], list[str]]] = {}
        found = []
        for ev in events:
            if ev.room_id not in rooms:
                rooms[ev.room_id] = (
                    directory_store.aliases_for_room(conn, ev.room_id),
                    store.joined_members(conn, ev.room_id),
                )
            aliases, members = rooms[ev.room_id]
            pdu: dict[str, object] = {"type": ev.type, "sender": ev.sender, "room_id": ev.room_id}
            if ev.state_key is not None:
                pdu["state_key"] = ev.state_key
            for service in self._pushable:
                if service.is_interested_in_event(pdu, aliases, members):
                    found.append((service.id, ev.event_id))
        return found

    # --- sending ---------------------------------------------------------------------

    async def _send_queue(self, service: AppService) -> None:
        backoff = 0.0
        while True:
            self._queued[service.id] = wake = trio.Event()
            txn = await self._db.write(store.next_transaction, service.id, TXN_EVENTS)
            if txn is None:
                await wake.wait()
                continue
            if await self._send(service, txn):
                await self._db.write(store.complete_transaction, service.id, txn)
                self._sent += 1
                backoff = 0.0
            else:
                self._failed += 1
                backoff = BACKOFF.next(backoff)
                await trio.sleep(backoff)

    async def _send(self, service: AppService, txn: store.PendingTxn) -> bool:
        read = await self._reader.get_events(txn.event_ids)
        now_ms = int(time.time() * 1000)
        events = [client_event(read[i], now_ms) for i in txn.event_ids if i in read]
        answer = await self._appservices.client.request(
            service,
            "PUT",
            app_path("transactions", str(txn.txn_id)),
            body={"events": events, "ephemeral": []},
        )
        if not answer.ok:
            log.warning(
                "application service %s: transaction %d not accepted (%s)",
                service.id,
                txn.txn_id,
                answer.detail or f"HTTP {answer.status}",
            )
        return answer.ok
