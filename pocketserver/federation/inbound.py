"""Inbound transactions: ``PUT /_matrix/federation/v1/send/{txnId}``.

server-server-api.md "Transactions" and "Checks performed on receipt of a PDU".

Answering: a transaction is idempotent per ``(origin, txnId)`` (a retry gets the
answer given before, nothing is applied twice). Its EDUs are applied at once (they are
small; to-device messages are written durably by their handler). Its PDUs are
*staged*: written to SQLite together with the answer, before the answer is sent, so an
acknowledged PDU is never lost (processed after a crash), and the peer is not kept
waiting while we fetch what a PDU refers to (as Synapse stages them). Only one
transaction per origin is taken at a time; a second concurrent one is answered 429 (a
peer sends one at a time; a retry comes once the first is answered).

Which PDUs are taken: those of rooms we are in, whose room's ACL allows the origin
(otherwise the answer says why for that event ID, as the spec asks), that parse as PDUs
of the room's version; others are left out of the answer, as Synapse does for rooms it
does not know. At most 50 PDUs and 100 EDUs per transaction (the spec's limits).

Processing (:class:`StagedPduWorker`): each room's staged PDUs in order, one task per
room and at most :data:`MAX_ROOMS_AT_ONCE` rooms at a time, each PDU within
:data:`PDU_BUDGET_S` (one pathological room cannot stall the others). A PDU goes
through the room writer as a *new* event; when it names events we lack:

- unknown auth events: its auth chain from the origin (``/event_auth``) as outliers;
- unknown prev events: the gap from the origin (``/get_missing_events``, at most
  :data:`MISSING_EVENTS_LIMIT`, oldest first, each processed the same way without
  fetching further); the oldest of those whose prev events are still missing gets its
  state from the origin: ``/state_ids`` at each prev event we lack (plus the events we
  lack, ``/event``), resolved with the state after the prev events we hold, as Synapse's
  "_get_state_ids_after_missing_prev_event". A PDU whose prev events are still missing
  after that is dropped, as Synapse drops it.

A PDU that fails anyway is dropped with a log line; the DAG still heals, since a later
event of the room makes us fetch what is missing again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from urllib.parse import quote

import trio

from pocketserver.core.crypto import SignatureError
from pocketserver.core.events import EventFormatError, compute_event_id, prev_event_ids
from pocketserver.errors import MatrixError, bad_json
from pocketserver.federation.errors import FederationError
from pocketserver.federation.event_keys import verify_and_collect
from pocketserver.federation.history import FederationHistory
from pocketserver.federation.keyring import Keyring
from pocketserver.federation.requests import JsonRequests
from pocketserver.rooms.store import RoomStore, StateKey
from pocketserver.rooms.writer import EventKind, MissingEventsError, PersistedEvent, RoomWriter
from pocketserver.storage import events as event_store
from pocketserver.storage import federation_inbound as store

log = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
MAX_ROOMS_AT_ONCE = 4
PDU_BUDGET_S = 120.0
MISSING_EVENTS_LIMIT = 10
STAGED_BATCH = 20
FETCH_TIMEOUT_S = 60.0
MAX_STATE_FETCH = 5000
"""Events fetched one by one (``/event``) to fill the state before a PDU; a bigger gap
is left to the next event (partial-state joins, issue #11, take big rooms)."""
FETCH_CONCURRENCY = 8
MAX_PREV_STATES = 10
"""Prev events of one PDU whose state is taken into account (each missing one costs a
``/state_ids``); room versions allow 20 prev events, real servers send a few."""

EduHandler = Callable[[str, str, object], Awaitable[bool]]
"""``(origin, edu_type, content) -> handled``; handlers never raise for bad input."""


def _path(*parts: str) -> str:
    return "/_matrix/federation/v1/" + "/".join(quote(p, safe="") for p in parts)


def _depth(pdu: Mapping[str, object]) -> int:
    depth = pdu.get("depth")
    return depth if isinstance(depth, int) else 0


def _list_of_dicts(value: object) -> list[dict[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


class PduPipeline:
    """One remote PDU into its room, fetching what it refers to from ``origin``."""

    def __init__(self, writer: RoomWriter, keyring: Keyring, client: JsonRequests) -> None:
        self.writer = writer
        self.store: RoomStore = writer.store
        self.keyring = keyring
        self.client = client

    async def _receive(
        self,
        origin: str,
        pdu: dict[str, object],
        room_version: str,
        state_before: Mapping[StateKey, str] | None = None,
        kind: EventKind = EventKind.NEW,
    ) -> PersistedEvent:
        keys, errors = await verify_and_collect(self.keyring, [(pdu, room_version)])
        if errors[0] is not None:
            raise errors[0]
        return await self.writer.receive_pdu(
            pdu, room_version, keys, kind=kind, state_before=state_before, origin=origin
        )

    async def _outliers(
        self, origin: str, room_id: str, room_version: str, pdus: Sequence[dict[str, object]]
    ) -> None:
        if not pdus:
            return
        keys, errors = await verify_and_collect(self.keyring, [(p, room_version) for p in pdus])
        good = [p for p, e in zip(pdus, errors, strict=True) if e is None]
        await self.writer.receive_batch(
            room_id, room_version, good, keys, kind=EventKind.OUTLIER, origin=origin
        )

    async def process(
        self, origin: str, room_id: str, pdu: dict[str, object], room_version: str
    ) -> PersistedEvent | None:
        """Take a PDU received in a transaction; None if it could not be placed.

        Its prev events come first (the gap is pulled with ``/get_missing_events``),
        then its auth events (``/event_auth``): the gap often holds the auth events
        (a member event of its sender). If prev events are still missing after that
        one round, the PDU is dropped, as Synapse does ("isn't divulging details about
        prev_events"); only pulled events get their state from ``/state_ids``.
        """
        event_id = compute_event_id(pdu, room_version)
        if await self._lacks_prevs(pdu, room_version):
            await self._fill_gap(origin, room_id, event_id, pdu, room_version)
            if await self._lacks_prevs(pdu, room_version):
                log.info("dropping %s from %s: its prev events are still missing", event_id, origin)
                return None
        return await self._with_auth(origin, room_id, event_id, pdu, room_version, None)

    async def _lacks_prevs(self, pdu: Mapping[str, object], room_version: str) -> bool:
        """Whether a prev event of ``pdu`` is unknown here or held without its state
        (an outlier)."""
        prev_ids = prev_event_ids(pdu, room_version)
        held = await self.store.get_events(prev_ids)
        return any(
            (ev := held.get(prev)) is None or ev.outlier or ev.state_after is None
            for prev in prev_ids
        )

    async def _with_auth(
        self,
        origin: str,
        room_id: str,
        event_id: str,
        pdu: dict[str, object],
        room_version: str,
        state: Mapping[StateKey, str] | None,
        kind: EventKind = EventKind.NEW,
    ) -> PersistedEvent:
        """Receive; on unknown auth events, fetch the auth chain once and retry."""
        try:
            return await self._receive(origin, pdu, room_version, state, kind)
        except MissingEventsError as e:
            if e.what != "auth":
                raise
        answer = await self.client.get_json(
            origin, _path("event_auth", room_id, event_id), timeout_s=FETCH_TIMEOUT_S
        )
        chain = _list_of_dicts(answer.get("auth_chain") if isinstance(answer, dict) else None)
        await self._outliers(origin, room_id, room_version, chain)
        return await self._receive(origin, pdu, room_version, state, kind)

    async def backfill(
        self, origin: str, room_id: str, room_version: str, pdus: Sequence[dict[str, object]]
    ) -> int:
        """Store a ``/backfill`` answer as *backfill* (old history), oldest first;
        return how many events got a place in the timeline. An event whose prev events
        we lack (the oldest of the answer) gets the state after them from ``origin``
        (:meth:`_state_from_prevs`); events that fail a check are dropped with a log line."""
        placed = 0
        for pdu in sorted(pdus, key=_depth):
            try:
                event_id = compute_event_id(pdu, room_version)
                if RoomWriter._remote_room_id(pdu, room_version, event_id) != room_id:
                    continue
                known = await self.store.get_event(event_id)
                if known is not None and not known.outlier:
                    continue
                state = None
                if await self._lacks_prevs(pdu, room_version):
                    state = await self._state_from_prevs(origin, room_id, pdu, room_version)
                await self._with_auth(
                    origin, room_id, event_id, pdu, room_version, state, EventKind.BACKFILL
                )
                placed += 1
            except (
                MissingEventsError,
                EventFormatError,
                SignatureError,
                FederationError,
                KeyError,
                TypeError,
                ValueError,
            ) as e:
                log.info("a backfilled event from %s for %s failed: %s", origin, room_id, e)
        return placed

    async def _fill_gap(
        self, origin: str, room_id: str, event_id: str, pdu: dict[str, object], room_version: str
    ) -> None:
        """``/get_missing_events`` between our forward extremities and the PDU."""
        extremities = await self.store.db.read(event_store.get_forward_extremities, room_id)
        body = {
            "earliest_events": [e for e, _ in extremities],
            "latest_events": [event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": min((d for _, d in extremities), default=0),
        }
        try:
            answer = await self.client.post_json(
                origin, _path("get_missing_events", room_id), body, timeout_s=FETCH_TIMEOUT_S
            )
        except FederationError as e:
            log.info("get_missing_events from %s for %s failed: %s", origin, event_id, e)
            return
        events = _list_of_dicts(answer.get("events") if isinstance(answer, dict) else None)
        events.sort(key=_depth)
        for missing in events[:MISSING_EVENTS_LIMIT]:
            try:
                missing_id = compute_event_id(missing, room_version)
                state = None
                if await self._lacks_prevs(missing, room_version):
                    # Still a gap before the oldest event returned: its state comes
                    # from the origin (Synapse does one round of get_missing_events,
                    # then asks /state_ids at the prev events it still lacks).
                    state = await self._state_from_prevs(origin, room_id, missing, room_version)
                await self._with_auth(origin, room_id, missing_id, missing, room_version, state)
            except MissingEventsError as e:
                log.info("a missing event from %s for %s failed: %s", origin, room_id, e)
            except (EventFormatError, SignatureError, FederationError) as e:
                log.info("a missing event from %s for %s failed: %s", origin, room_id, e)

    async def _state_from_prevs(
        self, origin: str, room_id: str, pdu: Mapping[str, object], room_version: str
    ) -> dict[StateKey, str]:
        """The state before a PDU some of whose prev events we lack: the state after
        each prev event (ours for those we hold with their state; for the others the
        origin's ``/state_ids`` at that event plus the event itself), resolved together.

        server-server-api.md "Checks performed on receipt of a PDU" (the state before
        the event is the resolution of the states after its prev events) and Synapse's
        ``_get_state_ids_after_missing_prev_event``, which asks ``/state_ids`` at each
        missing prev event (SyTest 50federation/36state.pl expects exactly these
        requests).

        Raises:
            FederationError: the origin could not answer for a missing prev event.
        """
        prev_ids = prev_event_ids(pdu, room_version)[:MAX_PREV_STATES]
        held = await self.store.get_events(prev_ids)
        states: list[dict[StateKey, str]] = []
        for prev in prev_ids:
            ev = held.get(prev)
            if ev is not None and not ev.outlier and ev.state_after is not None:
                states.append(dict(await self.store.group_state(ev.state_after)))
            else:
                states.append(await self._state_after(origin, room_id, prev, room_version))
        if not states:
            raise FederationError(origin, "an event without prev events cannot be placed")
        return await self.writer.resolve_states(room_version, states)

    async def _state_after(
        self, origin: str, room_id: str, event_id: str, room_version: str
    ) -> dict[StateKey, str]:
        """The state after ``event_id`` as ``origin`` has it: ``/state_ids`` (the state
        before it), the events we lack and the event itself, stored as outliers; the
        event is added when it is an accepted state event."""
        answer = await self.client.get_json(
            origin,
            _path("state_ids", room_id),
            query={"event_id": event_id},
            timeout_s=FETCH_TIMEOUT_S,
        )
        if not isinstance(answer, dict):
            raise FederationError(origin, "bad /state_ids answer")
        pdu_ids = [i for i in answer.get("pdu_ids", []) if isinstance(i, str)]
        chain_ids = [i for i in answer.get("auth_chain_ids", []) if isinstance(i, str)]
        wanted = list(dict.fromkeys([*chain_ids, *pdu_ids, event_id]))
        known = await self.store.get_events(wanted)
        unknown = [i for i in wanted if i not in known][:MAX_STATE_FETCH]
        fetched: list[dict[str, object]] = []
        limiter = trio.CapacityLimiter(FETCH_CONCURRENCY)

        async def fetch(one: str) -> None:
            async with limiter:
                try:
                    got = await self.client.get_json(
                        origin, _path("event", one), timeout_s=FETCH_TIMEOUT_S
                    )
                except FederationError as e:
                    log.info("fetching %s from %s failed: %s", one, origin, e)
                    return
            pdus = _list_of_dicts(got.get("pdus") if isinstance(got, dict) else None)
            fetched.extend(pdus[:1])

        async with trio.open_nursery() as nursery:
            for one in unknown:
                nursery.start_soon(fetch, one)
        await self._outliers(origin, room_id, room_version, fetched)
        stored = await self.store.get_events(pdu_ids)
        state: dict[StateKey, str] = {}
        for eid in pdu_ids:
            ev = stored.get(eid)
            if ev is not None and ev.state_key is not None and ev.rejected is None:
                state[(ev.type, ev.state_key)] = eid
        itself = (await self.store.get_events([event_id])).get(event_id)
        if itself is not None and itself.state_key is not None and itself.rejected is None:
            state[(itself.type, itself.state_key)] = event_id
        return state


def _check_shape(body: Mapping[str, object]) -> tuple[list[object], list[object]]:
    """The transaction's PDUs and EDUs: lists of at most 50 and 100 (server-server API
    "Transactions").

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` otherwise.
    """
    pdus, edus = body.get("pdus", []), body.get("edus", [])
    if not isinstance(pdus, list) or not isinstance(edus, list):
        raise bad_json("pdus and edus must be lists")
    if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
        raise bad_json(f"at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs per transaction")
    return pdus, edus


class TransactionReceiver:
    """``PUT /send/{txnId}`` (see the module docstring)."""

    def __init__(
        self,
        store: RoomStore,
        history: FederationHistory,
        edu_handlers: Sequence[EduHandler],
        on_contact: Callable[[str], None] = lambda origin: None,
    ) -> None:
        self.store = store
        self.db = store.db
        self.history = history
        self._edu_handlers = list(edu_handlers)
        self._on_contact = on_contact
        self._busy: set[str] = set()
        self.pending_rooms: set[str] = set()
        """Rooms with newly staged PDUs (each once, so bounded by the rooms we are in)."""
        self.staged = trio.Event()

    async def receive(
        self, origin: str, txn_id: str, body: Mapping[str, object]
    ) -> dict[str, object]:
        # The shape and size first, as Synapse (federation_server.py checks the counts
        # before its one-transaction-per-origin rule): an oversized transaction is a
        # 400 even while another from the same server is in progress.
        _check_shape(body)
        if origin in self._busy:
            raise MatrixError(
                429,
                "M_LIMIT_EXCEEDED",
                "a transaction from your server is in progress",
                retry_after_ms=1000,
            )
        self._busy.add(origin)
        try:
            return await self._receive(origin, txn_id, body)
        finally:
            self._busy.discard(origin)

    async def _receive(
        self, origin: str, txn_id: str, body: Mapping[str, object]
    ) -> dict[str, object]:
        self._on_contact(origin)
        before = await self.db.read(store.txn_response, origin, txn_id)
        if before is not None:
            return before
        pdus, edus = _check_shape(body)
        for edu in edus:
            await self._edu(origin, edu)
        results: dict[str, dict[str, object]] = {}
        staged: list[tuple[str, str, dict[str, object]]] = []
        for pdu in pdus:
            taken = await self._stage(origin, pdu, results)
            if taken is not None:
                staged.append(taken)
        response: dict[str, object] = {"pdus": results}
        recorded = await self.db.write(
            store.record_transaction, origin, txn_id, response, staged, int(time.time() * 1000)
        )
        if not recorded:  # a retry raced us (not from this origin: it is locked)
            again = await self.db.read(store.txn_response, origin, txn_id)
            return again if again is not None else response
        if staged:
            self.pending_rooms.update(r for r, _, _ in staged)
            self.staged.set()
        return response

    async def _edu(self, origin: str, edu: object) -> None:
        if not isinstance(edu, Mapping) or not isinstance(edu.get("edu_type"), str):
            log.info("ignoring a malformed EDU from %s", origin)
            return
        edu_type, content = str(edu["edu_type"]), edu.get("content")
        for handler in self._edu_handlers:
            try:
                if await handler(origin, edu_type, content):
                    return
            except MatrixError as e:
                log.info("%s EDU from %s refused: %s", edu_type, origin, e.error)
                return
        log.debug("ignoring %s EDU from %s: not handled", edu_type, origin)

    async def _stage(
        self, origin: str, pdu: object, results: dict[str, dict[str, object]]
    ) -> tuple[str, str, dict[str, object]] | None:
        if not isinstance(pdu, dict) or not isinstance(pdu.get("room_id"), str):
            log.info("ignoring a PDU from %s without a room", origin)
            return None
        room_id = str(pdu["room_id"])
        room_version = await self.store.room_version(room_id)
        if room_version is None:
            log.info("ignoring a PDU from %s for %s: we are not in that room", origin, room_id)
            return None
        try:
            event_id = compute_event_id(pdu, room_version)
        except (EventFormatError, KeyError, TypeError, ValueError) as e:
            log.info("ignoring a malformed PDU from %s: %s", origin, e)
            return None
        try:
            await self.history.check_acl(origin, room_id)
        except MatrixError as e:
            results[event_id] = {"error": e.error}
            return None
        results[event_id] = {}
        return room_id, event_id, pdu


class StagedPduWorker:
    """Processes staged PDUs room by room (see the module docstring)."""

    def __init__(self, receiver: TransactionReceiver, pipeline: PduPipeline) -> None:
        self.receiver = receiver
        self.pipeline = pipeline
        self.db = receiver.db
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._limiter = trio.CapacityLimiter(MAX_ROOMS_AT_ONCE)
        self.processed = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for room_id in await self.db.read(store.staged_rooms):
                self._start(nursery, room_id)
            task_status.started()
            while True:
                await self.receiver.staged.wait()
                self.receiver.staged = trio.Event()
                rooms, self.receiver.pending_rooms = self.receiver.pending_rooms, set()
                for room_id in rooms:
                    self._start(nursery, room_id)

    def _start(self, nursery: trio.Nursery, room_id: str) -> None:
        if room_id in self._active:
            self._again.add(room_id)
            return
        self._active.add(room_id)
        nursery.start_soon(self._drain, room_id)

    async def _drain(self, room_id: str) -> None:
        try:
            async with self._limiter:
                while True:
                    batch = await self.db.read(store.next_staged, room_id, STAGED_BATCH)
                    if not batch:
                        if room_id in self._again:
                            self._again.discard(room_id)
                            continue
                        return
                    for staged in batch:
                        await self._one(staged)
                        await self.db.write(store.drop_staged, staged.seq)
        finally:
            self._active.discard(room_id)

    async def _one(self, staged: store.StagedPdu) -> None:
        room_version = await self.pipeline.store.room_version(staged.room_id)
        if room_version is None:
            return
        with trio.move_on_after(PDU_BUDGET_S) as scope:
            try:
                result = await self.pipeline.process(
                    staged.origin, staged.room_id, staged.pdu, room_version
                )
            except (MissingEventsError, EventFormatError, SignatureError, FederationError) as e:
                log.info("dropping %s from %s: %s", staged.event_id, staged.origin, e)
                return
            except MatrixError as e:
                log.info("dropping %s from %s: %s", staged.event_id, staged.origin, e.error)
                return
            self.processed += 1
            if result is not None and result.rejected:
                log.info("%s from %s rejected: %s", staged.event_id, staged.origin, result.rejected)
        if scope.cancelled_caught:
            log.warning(
                "gave up on %s from %s after %ss", staged.event_id, staged.origin, PDU_BUDGET_S
            )
