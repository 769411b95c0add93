"""One destination's queue and the task that empties it, one transaction at a time
(server-server-api.md "Transactions": ``PUT /_matrix/federation/v1/send/{txnId}``).

A destination is *live* or *catching up*. Live, it holds the events owed to it in
memory (at most ``PENDING_PDU_CAP``) and sends them in order, 50 PDUs and 100 EDUs
a transaction. When it fails, or falls too far behind, it drops that list and
catches up from SQLite instead, as Synapse's per-destination queue does: for each
room with an event owed after the last one delivered, oldest room first, one
transaction carries the room's newest events (its forward extremities stored since
then, else the owed event itself), and the destination fetches what lies between
with ``/get_missing_events``. Every queue starts catching up, which costs one read
when nothing is owed.

Failures back off as Synapse's retry limiter does (``destination_min_retry_interval``
10 minutes, multiplied by 2 with a random factor of 0.8-1.4 per failure, at most
``destination_max_retry_interval`` 7 days; a failed transaction is first retried a
couple of times within seconds). The backoff is stored, so it survives a restart,
and ends at the first success or as soon as the server contacts us.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

import trio

from pocketserver.federation.sender.edus import Edu, VolatileEdus, edu
from pocketserver.federation.sender.transport import FederationSendError, FederationTransport
from pocketserver.net.backoff import Backoff
from pocketserver.rooms.store import RoomStore
from pocketserver.storage import federation_sender as store
from pocketserver.storage.db import Database
from pocketserver.storage.federation_sender import NO_BACKOFF, RetryTimings

log = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
RESERVED_DEVICE_LIST_EDUS = 10
"""Slots of a transaction's 100 EDUs that to-device messages may not take (Synapse)."""
MAX_RECEIPT_EDUS = 5
PENDING_PDU_CAP = 200
"""Events held in memory for a live destination; past this it catches up instead."""
CATCH_UP_ROOMS = 50
TXN_TIMEOUT_S = 60.0
DROP_EDUS_AFTER_MS = 3_600_000
"""A destination backing off longer than this loses its pending volatile EDUs."""
DESTINATION_BACKOFF = Backoff(minimum=600.0, maximum=7 * 86400.0, jitter=(0.8, 1.4))
SHORT_RETRIES_S = (2.0, 10.0)


@dataclass(frozen=True, slots=True)
class OwedEvent:
    event_id: str
    stream_ordering: int


class Destination:
    """What is waiting for one destination, in memory."""

    __slots__ = ("catching_up", "edus", "name", "new_data", "outbox", "pdus", "running", "skipped")

    def __init__(self, name: str, *, catching_up: bool = True) -> None:
        self.name = name
        self.pdus: deque[OwedEvent] = deque()
        self.edus = VolatileEdus()
        self.catching_up = catching_up
        self.skipped = False
        """An event was owed while catching up (catch-up must look again)."""
        self.outbox = True
        """The outbox may hold EDUs for it."""
        self.new_data = False
        self.running = False

    def add_pdu(self, owed: OwedEvent) -> None:
        if self.catching_up:
            self.skipped = True
        elif len(self.pdus) >= PENDING_PDU_CAP:
            log.info("federation: %s fell behind; catching up", self.name)
            self.start_catching_up()
            self.skipped = True
        else:
            self.pdus.append(owed)
        self.new_data = True

    def start_catching_up(self) -> None:
        self.pdus.clear()
        self.catching_up = True

    def idle(self) -> bool:
        return not self.running and not self.pdus and not len(self.edus)


@dataclass(slots=True)
class _Txn:
    pdus: list[dict[str, object]]
    edus: list[Edu]
    upto: int | None = None
    outbox_seqs: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Counters:
    transactions: int = 0
    catch_up_transactions: int = 0
    failures: int = 0


class Transmitter:
    """Sends a destination's queue; one :meth:`transmit` task per destination at most."""

    def __init__(
        self,
        db: Database,
        store_: RoomStore,
        transport: FederationTransport,
        server_name: str,
        now_ms: Callable[[], int],
        *,
        backoff: Backoff = DESTINATION_BACKOFF,
        short_retries: tuple[float, ...] = SHORT_RETRIES_S,
        max_in_flight: int = 32,
    ) -> None:
        self._db = db
        self._store = store_
        self._transport = transport
        self._server_name = server_name
        self._now_ms = now_ms
        self._backoff = backoff
        self._short_retries = short_retries
        self._limiter = trio.CapacityLimiter(max_in_flight)
        self._next_txn = now_ms()
        self.counters = Counters()
        self.on_up: Callable[[str], None] = lambda name: None
        self.on_down: Callable[[str], None] = lambda name: None

    async def transmit(self, dest: Destination) -> None:
        """Send until nothing is left or the destination fails (then it backs off)."""
        timings = await self._db.read(store.retry_timings, dest.name)
        if not timings.due(self._now_ms()):
            return
        while True:
            if dest.catching_up:
                if not await self._catch_up(dest, timings):
                    return
                timings = NO_BACKOFF
            dest.new_data = False
            txn = await self._prepare(dest)
            if txn is None:
                if dest.new_data or dest.catching_up:
                    continue
                return
            if not await self._put(dest, txn.pdus, txn.edus, timings):
                return
            timings = NO_BACKOFF
            if txn.upto is not None or txn.outbox_seqs:
                await self._db.write(
                    store.mark_delivered, dest.name, txn.upto, txn.outbox_seqs, False
                )
            while dest.pdus and txn.upto is not None and dest.pdus[0].stream_ordering <= txn.upto:
                dest.pdus.popleft()

    async def _catch_up(self, dest: Destination, timings: RetryTimings) -> bool:
        last = await self._db.read(store.last_successful, dest.name)
        if last is None:  # never owed anything
            dest.catching_up = False
            return True
        while True:
            dest.skipped = False
            rooms = await self._db.read(store.catch_up_rooms, dest.name, last, CATCH_UP_ROOMS)
            if not rooms:
                if dest.skipped:
                    continue
                dest.catching_up = False
                return True
            for room in rooms:
                ids = await self._db.read(store.extremities_since, room.room_id, last, MAX_PDUS)
                if not ids or room.event_id in ids:
                    ids = [room.event_id]
                pdus = await self._pdus(ids)
                if not await self._put(dest, pdus, [], timings):
                    return False
                timings = NO_BACKOFF
                self.counters.catch_up_transactions += 1
                last = room.stream_ordering
                await self._db.write(store.mark_delivered, dest.name, last, [], False)

    async def _prepare(self, dest: Destination) -> _Txn | None:
        """The next live transaction (None: nothing to send). Priorities as Synapse's:
        presence, a few receipt EDUs, to-device messages (keeping room for device
        list updates), device list and signing key updates, then typing."""
        edus = dest.edus.take_presence() + dest.edus.take_receipts(MAX_RECEIPT_EDUS)
        txn = _Txn(pdus=[], edus=edus)
        if dest.outbox:
            dest.outbox = False
            room = MAX_EDUS - len(edus)
            to_device = await self._db.read(
                store.outbox_edus,
                dest.name,
                store.LANE_TO_DEVICE,
                room - RESERVED_DEVICE_LIST_EDUS,
            )
            devices = await self._db.read(
                store.outbox_edus, dest.name, store.LANE_DEVICE_LISTS, room - len(to_device)
            )
            for row in (*to_device, *devices):
                txn.edus.append(edu(row.edu_type, row.content))
                txn.outbox_seqs.append(row.seq)
            dest.outbox = dest.outbox or bool(txn.outbox_seqs)
        txn.edus += dest.edus.take_typing(MAX_EDUS - len(txn.edus))
        owed = list(islice(dest.pdus, MAX_PDUS))
        if owed:
            txn.pdus = await self._pdus([o.event_id for o in owed])
            txn.upto = owed[-1].stream_ordering
        if not owed and not txn.edus:
            return None
        return txn

    async def _pdus(self, event_ids: list[str]) -> list[dict[str, object]]:
        found = await self._store.get_events(event_ids)
        return [found[e].pdu for e in event_ids if e in found]

    async def _put(
        self,
        dest: Destination,
        pdus: list[dict[str, object]],
        edus: list[Edu],
        timings: RetryTimings,
    ) -> bool:
        """Send one transaction (retried a few times at once); record the outcome."""
        txn_id = str(self._next_txn)
        self._next_txn += 1
        body: dict[str, object] = {
            "origin": self._server_name,
            "origin_server_ts": self._now_ms(),
            "pdus": pdus,
            "edus": edus,
        }
        error: Exception | None = None
        for delay in (0.0, *self._short_retries):
            await trio.sleep(delay)
            try:
                async with self._limiter:
                    answer = await self._transport.put_json(
                        dest.name, f"/_matrix/federation/v1/send/{txn_id}", body, TXN_TIMEOUT_S
                    )
            except FederationSendError as e:
                error = e
                if e.status is not None and 400 <= e.status < 500 and e.status not in (408, 429):
                    break  # refused: retrying at once will not help
            except Exception as e:  # a bug in the client must not stop the sender
                log.exception("federation: sending to %s failed", dest.name)
                error = e
            else:
                await self._succeeded(dest, timings, txn_id, answer)
                return True
        await self._failed(dest, timings, error)
        return False

    async def _succeeded(
        self, dest: Destination, timings: RetryTimings, txn_id: str, answer: dict[str, object]
    ) -> None:
        self.counters.transactions += 1
        if timings.retry_interval_ms:
            await self._db.write(store.clear_backoff, dest.name)
            log.info("federation: %s is reachable again", dest.name)
        self.on_up(dest.name)
        results = answer.get("pdus")
        if isinstance(results, dict):
            for event_id, result in results.items():
                if isinstance(result, dict) and "error" in result:
                    log.info(
                        "federation: %s refused %s in txn %s: %s",
                        dest.name,
                        event_id,
                        txn_id,
                        result["error"],
                    )

    async def _failed(
        self, dest: Destination, timings: RetryTimings, error: Exception | None
    ) -> None:
        now = self._now_ms()
        interval_ms = int(self._backoff.next(timings.retry_interval_ms / 1000) * 1000)
        await self._db.write(
            store.set_retry_timings,
            dest.name,
            RetryTimings(timings.failure_ts or now, now, interval_ms),
        )
        self.counters.failures += 1
        self.on_down(dest.name)
        dest.start_catching_up()
        dest.edus.drop_transient()
        if interval_ms > DROP_EDUS_AFTER_MS:
            dest.edus.clear()
        log.info(
            "federation: %s unreachable (%s); next try in %d s",
            dest.name,
            error,
            interval_ms // 1000,
        )
