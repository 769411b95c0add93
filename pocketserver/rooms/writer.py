"""The room writer: the only code that appends events to rooms.

Every event that enters a room, local or from federation, goes through here: it is
authorised, the state at it is computed, and event, state, extremities and current
state are persisted in one transaction; then waiters are woken with the new stream
position. Work is serialised per room (a lock per room); different rooms proceed
concurrently and meet only at the database's single write connection.

Remote PDUs follow server-server-api.md "Checks performed on receipt of a PDU":
format, signatures, content hash (a mismatch redacts the event), auth against its
auth events, auth against the state before it (else rejected), auth against the
current state (else soft-failed).

Remote input comes in one of three kinds (:class:`EventKind`, as Dendrite's
roomserver input kinds):

- *new*: live traffic. It may become a forward extremity, change the current state,
  wake /sync and be pushed; it takes the next (positive) stream ordering.
- *backfill*: old history fetched to fill the past (``/backfill``). It gets the state
  before it and full checks, but is never a forward extremity, never changes the
  current state, is not soft-failed (as Synapse), never wakes /sync and is never
  pushed. It takes a *negative* stream ordering below everything stored
  (storage/events.py), so no sync token is ever before it; /messages places it by
  its depth (rooms/history.py).
- *outlier*: an auth or state event held without its place in the DAG (no state,
  no timeline place; a later *new*/*backfill* receipt of it gives it both).

:meth:`RoomWriter.receive_batch` takes many events at once: outliers (the state and
auth chain of a join, thousands of events) are each checked, then stored in a few
large write transactions of :data:`BATCH_TXN_EVENTS` events.

Every stored event is reported to listeners as a :class:`PersistedEvent` that carries
its kind, its origin and the state group before it, so listeners skip backfill and
outliers and derived data (push rules, the search index's redaction check) is
computed from the state *at the event*, not the room's current state.
"""

from __future__ import annotations

import enum
import heapq
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from nacl.signing import SigningKey, VerifyKey

from pocketserver.core.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_against_state,
)
from pocketserver.core.client_actions import ActionRefused, check_local_redaction
from pocketserver.core.crypto import SignatureError, check_content_hash, encode_canonical_json
from pocketserver.core.event_signing import verify_event_signatures
from pocketserver.core.events import (
    MAX_KEY_BYTES,
    MAX_PDU_BYTES,
    EventFormatError,
    auth_event_ids,
    compute_event_id,
    prev_event_ids,
    validate_pdu,
)
from pocketserver.core.policy_server import PolicyServer, is_exempt, needs_signature
from pocketserver.core.redaction import redact
from pocketserver.core.room_versions import get_room_version
from pocketserver.errors import MatrixError
from pocketserver.rooms import building
from pocketserver.rooms.locks import KeyedLocks
from pocketserver.rooms.policy import room_policy
from pocketserver.rooms.resolver import StateResolver, Unstored
from pocketserver.rooms.store import RoomStore, StateKey
from pocketserver.storage import events as event_store
from pocketserver.storage import partial_state as partial_store
from pocketserver.storage import state as state_store
from pocketserver.storage.events import StoredEvent
from pocketserver.streams.notifier import Notifier

log = logging.getLogger(__name__)

CREATE_KEY: StateKey = ("m.room.create", "")
BATCH_TXN_EVENTS = 1000
"""Outliers of a batch are stored this many per write transaction (a 2,000-event join
state is two transactions, short enough not to hold other rooms' writes up long)."""


class EventKind(enum.Enum):
    """How an event enters a room (see the module docstring)."""

    NEW = "new"
    BACKFILL = "backfill"
    OUTLIER = "outlier"


Guard = Callable[[Mapping[StateKey, str]], Awaitable[None]]
"""Checks a local event's request against the state before it (under the room's lock)."""
RemoteSign = Callable[
    [str, dict[str, object], Mapping[StateKey, str]], Awaitable[dict[str, object]]
]
"""Has another server sign a local event before it is stored (an invite of its user):
``(event_id, pdu, state_before) -> pdu with its signature added``; raises to refuse."""
PolicySign = Callable[[PolicyServer, str, dict[str, object]], Awaitable[dict[str, object]]]
"""Has the room's policy server sign a local event before it is stored:
``(policy server, room version, pdu) -> pdu with its valid signature added``; raises
(a MatrixError for the client) to refuse the event."""
PolicyResign = Callable[[str, str, dict[str, object]], Awaitable[dict[str, object]]]
"""Asks a room's policy server again for its signature on a received event that lacks
a valid one: ``(room_id, room version, pdu) -> pdu`` (unchanged when the room uses no
policy server or the policy server does not sign); never raises for its failures."""
TxnHook = Callable[[sqlite3.Connection, "PersistedEvent"], None]
"""Runs inside the event's write transaction (derived indexes: relations, search...)."""
Listener = Callable[["PersistedEvent"], None]
"""Runs after the commit; must not block (put work on a bounded queue)."""


class MissingEventsError(Exception):
    """A remote PDU names events this server doesn't have; fetch them and retry."""

    def __init__(self, event_ids: Sequence[str], what: str) -> None:
        super().__init__(f"missing {what} events: {', '.join(event_ids[:5])}")
        self.event_ids = list(event_ids)
        self.what = what


@dataclass(frozen=True, slots=True)
class PersistedEvent:
    """What the writer decided and stored."""

    event_id: str
    room_id: str
    stream_ordering: int
    pdu: dict[str, object]
    rejected: str | None = None
    soft_failed: bool = False
    kind: EventKind = EventKind.NEW
    origin: str | None = None
    """The server it came from: this server for local events, else the server that
    handed it over (by default its sender's)."""
    state_changed: bool = False
    """Storing the event changed the room's current state (caches of it are stale)."""
    state_before: int | None = None
    """The state group before the event (None for outliers and a create event)."""
    at_current: bool = True
    """The state before the event was the room's current state when it was stored (a
    live event on top of every forward extremity); False for a late or forked event,
    whose derived data must read ``state_before`` instead."""

    @property
    def accepted(self) -> bool:
        return self.rejected is None and not self.soft_failed

    @property
    def outlier(self) -> bool:
        return self.kind is EventKind.OUTLIER

    @property
    def live(self) -> bool:
        """Accepted live traffic: what wakes /sync, is pushed, sent to appservices."""
        return self.kind is EventKind.NEW and self.accepted


@dataclass
class _Prepared:
    room_id: str
    room_version: str
    event_id: str
    pdu: dict[str, object]
    depth: int
    prev_ids: list[str]
    auth_ids: list[str]
    state_before: dict[StateKey, str]
    state_before_group: int | None
    base_group: int | None = None  # a group state_before may be stored as a delta on
    base_state: dict[StateKey, str] = field(default_factory=dict)
    kind: EventKind = EventKind.NEW
    origin: str | None = None
    rejected: str | None = None
    soft_failed: bool = False
    new_room_creator: str | None = None
    existing_outlier: bool = False
    # A backfilled event's (negative) stream ordering, reserved before it is stored.
    backfill_ordering: int | None = None
    # The room's forward extremities when the event was built (read under the room lock).
    old_extremities: list[tuple[str, int]] | None = None
    # The event already has children in the graph (it arrived after them).
    has_children: bool = False
    # Set by _persist: the state before it was the room's current state.
    at_current: bool = True

    @property
    def outlier(self) -> bool:
        return self.kind is EventKind.OUTLIER

    @property
    def state_key(self) -> StateKey | None:
        sk = self.pdu.get("state_key")
        return (str(self.pdu["type"]), sk) if isinstance(sk, str) else None


def _members_changed(p: _Prepared, delta: Mapping[StateKey, str | None]) -> set[str]:
    """Users whose membership the event changed: its own target, and any member whose
    current state resolution changed (the notifier wakes them though they may no longer
    be in the room, as a kicked user must learn of the kick)."""
    users = {key for kind, key in delta if kind == "m.room.member"}
    if p.pdu.get("type") == "m.room.member" and isinstance(p.pdu.get("state_key"), str):
        users.add(str(p.pdu["state_key"]))
    return users


def _content(pdu: Mapping[str, object]) -> Mapping[str, object]:
    content = pdu.get("content")
    return content if isinstance(content, Mapping) else {}


class RoomWriter:
    """Appends events to rooms; see the module docstring."""

    def __init__(
        self,
        store: RoomStore,
        server_name: str,
        signing_key: SigningKey,
        notifier: Notifier,
    ) -> None:
        self.store = store
        self.server_name = server_name
        self._signing_key = signing_key
        self._notifier = notifier
        self.resolver = StateResolver(store)
        self._locks = KeyedLocks()
        self._txn_hooks: list[TxnHook] = []
        self._listeners: list[Listener] = []
        self._backfill_floor: int | None = None
        self._policy_sign: PolicySign | None = None
        self._policy_resign: PolicyResign | None = None

    def set_policy_signer(self, sign: PolicySign, resign: PolicyResign | None = None) -> None:
        """Ask ``sign`` for the policy server's signature on each local event of a room
        that uses one (server-server-api.md "Asking for a Policy Server signature"), and
        ``resign`` for a new one on each live received event (``receive_pdu``, before
        the room's lock is taken) without a valid one ("Validating Policy Server
        signatures": the homeserver SHOULD ask for a new signature)."""
        self._policy_sign = sign
        self._policy_resign = resign

    def add_txn_hook(self, hook: TxnHook) -> None:
        """Call ``hook(conn, event)`` inside the write transaction of every event stored."""
        self._txn_hooks.append(hook)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` after every event is committed (accepted or not)."""
        self._listeners.append(listener)

    async def complete_partial_state(
        self,
        room_id: str,
        join_event_id: str,
        missing: Mapping[StateKey, str],
        memberships: Mapping[str, str],
    ) -> int:
        """A partial-state room's resync is done: add the ``missing`` state (stored
        events) to its state groups since ``join_event_id`` and its current state, under
        the room's lock, so that no event is placed on a stale state meanwhile.
        Returns the entries added to the current state."""
        async with self._locks(room_id):
            added = await self.store.db.write(
                partial_store.complete_room, room_id, join_event_id, missing, memberships
            )
            self.store.forget_groups()
            self.store.partial_rooms.pop(room_id, None)
        return added

    # --- local events ---------------------------------------------------------------

    async def create_room(
        self,
        room_version: str,
        creator: str,
        extra_content: Mapping[str, object] | None = None,
        *,
        room_id: str | None = None,
    ) -> PersistedEvent:
        """Create a room by persisting its ``m.room.create`` event; return that event.

        ``room_id`` is the ID chosen beforehand for versions 1-11 (a room upgrade names
        it in the old room's tombstone first); by default a new one. From v12 on the
        ID is the create event's hash and ``room_id`` must be None.

        Raises:
            MatrixError: 400 ``M_UNSUPPORTED_ROOM_VERSION``; 400 ``M_BAD_JSON`` for a
                create event the version's format or auth rules refuse.
        """
        try:
            version = get_room_version(room_version)
        except ValueError:
            raise MatrixError(
                400, "M_UNSUPPORTED_ROOM_VERSION", f"unsupported room version {room_version!r}"
            ) from None
        content: dict[str, object] = {**(extra_content or {}), "room_version": room_version}
        if not version.implicit_room_creator:
            content["creator"] = creator
        pdu: dict[str, object] = {
            "type": "m.room.create",
            "state_key": "",
            "sender": creator,
            "content": content,
            "origin_server_ts": int(time.time() * 1000),
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
        }
        if version.hydra and room_id is not None:
            raise ValueError("a v12+ room ID comes from its create event")
        if not version.hydra:
            pdu["room_id"] = room_id or building.new_room_id(self.server_name)
        if version.event_ids_in_pdu:
            pdu["origin"] = self.server_name
        event_id, signed = building.finish_pdu(
            pdu, room_version, self.server_name, self._signing_key
        )
        room_id = (
            building.create_event_room_id(signed, room_version, self.server_name)
            if version.hydra
            else str(pdu["room_id"])
        )
        self._check_format(signed, room_version)
        try:
            check_auth(room_version, signed, {})
        except AuthError as e:
            raise MatrixError(400, "M_BAD_JSON", f"invalid create event: {e}") from None
        prepared = _Prepared(
            room_id=room_id,
            room_version=room_version,
            event_id=event_id,
            pdu=signed,
            depth=1,
            prev_ids=[],
            auth_ids=[],
            state_before={},
            state_before_group=None,
            new_room_creator=creator,
            origin=self.server_name,
        )
        async with self._locks(room_id):
            return await self._persist(prepared)

    async def send_event(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: Mapping[str, object],
        state_key: str | None = None,
        *,
        redacts: str | None = None,
        in_txn: TxnHook | None = None,
        guard: Guard | None = None,
        remote_sign: RemoteSign | None = None,
    ) -> PersistedEvent:
        """Build, sign, authorise and persist a local event.

        ``in_txn`` runs inside the event's write transaction (e.g. to record the
        client's transaction ID atomically with the event). ``guard`` is awaited
        with the state before the event, under the room's lock, and may refuse by
        raising (a client verb's own preconditions, e.g. ``/kick`` needs a member).
        A redaction must also pass :func:`check_local_redaction`.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` (unknown room), 403 ``M_FORBIDDEN`` (auth
                rules), 400 ``M_BAD_JSON`` or 413 ``M_TOO_LARGE`` (event format), or
                what ``guard`` or the redaction check raise.

        ``remote_sign`` is awaited with the authorised event before it is stored (under
        the room's lock, so the event stays on the room's front); what it returns is
        stored instead (the same event with another server's signature added); if it
        raises, nothing is stored.
        """
        async with self._locks(room_id):
            room_version = await self._room_version(room_id)
            prepared = await self._build_local(
                room_id, room_version, sender, event_type, content, state_key, redacts, guard
            )
            await self._policy_signed(prepared)
            if remote_sign is not None:
                prepared.pdu = await remote_sign(
                    prepared.event_id, prepared.pdu, prepared.state_before
                )
            return await self._persist(prepared, in_txn)

    @asynccontextmanager
    async def held_event(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: Mapping[str, object],
        state_key: str | None = None,
    ) -> AsyncIterator[str]:
        """Build and authorise a local event, yield its ID, and persist it when the
        block ends without an exception (not at all otherwise). The room takes no other
        event meanwhile (its lock is held), so the event's prev events stay its forward
        extremities. A room upgrade names the tombstone in the new room's
        ``predecessor`` before sending it, as Synapse does.

        Raises:
            MatrixError: as :meth:`send_event`, before the block runs.
        """
        async with self._locks(room_id):
            room_version = await self._room_version(room_id)
            prepared = await self._build_local(
                room_id, room_version, sender, event_type, content, state_key, None
            )
            await self._policy_signed(prepared)
            yield prepared.event_id
            await self._persist(prepared)

    async def event_template(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: Mapping[str, object],
        state_key: str | None,
        *,
        origin: str,
    ) -> tuple[str, dict[str, object]]:
        """An unsigned event for another server to sign (``make_join``, ``make_leave``,
        ``make_knock``): prev and auth events from the room as it is now, checked
        against the auth rules as if it were sent now. Returns (room version, event).

        For v1/v2 rooms the event names ``origin`` (the server that will sign it) and
        carries no ``event_id``: the signing server adds its own.

        Raises:
            MatrixError: 404 (unknown room), 403 ``M_FORBIDDEN`` (the auth rules refuse
                the event in the room's current state).
        """
        room_version = await self._room_version(room_id)
        prepared = await self._build_local(
            room_id, room_version, sender, event_type, content, state_key, None
        )
        template = {
            k: v
            for k, v in prepared.pdu.items()
            if k not in ("hashes", "signatures", "unsigned", "event_id")
        }
        if "origin" in template:
            template["origin"] = origin
        return room_version, template

    async def _policy_signed(self, p: _Prepared) -> None:
        """Add the room's policy server's signature to a local event before it is
        stored or sent (server-server-api.md "Asking for a Policy Server signature on
        an event": all servers MUST ask before sending). The signature is not part of
        the reference hash, so the event ID stays. The signer raises to refuse the
        event (the client's request fails, nothing is stored), as Synapse does
        (handlers/message.py: 403 when the policy server does not allow it)."""
        if self._policy_sign is None or is_exempt(p.pdu):
            return
        policy = await room_policy(self.store, p.state_before, self.server_name)
        if policy is not None:
            p.pdu = await self._policy_sign(policy, p.room_version, p.pdu)

    async def _room_version(self, room_id: str) -> str:
        version = await self.store.room_version(room_id)
        if version is None:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown room {room_id}")
        return version

    async def _build_local(
        self,
        room_id: str,
        room_version: str,
        sender: str,
        event_type: str,
        content: Mapping[str, object],
        state_key: str | None,
        redacts: str | None,
        guard: Guard | None = None,
    ) -> _Prepared:
        version = get_room_version(room_version)
        extremities = await self.store.forward_extremities(room_id)
        if not extremities:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown room {room_id}")
        chosen = extremities[: building.MAX_PREV_EVENTS]
        prev_ids = [eid for eid, _ in chosen]
        depth = min(max(d for _, d in chosen) + 1, building.MAX_DEPTH)
        prev_events = await self.store.get_events(prev_ids)
        p = _Prepared(
            room_id=room_id,
            room_version=room_version,
            event_id="",
            pdu={},
            depth=depth,
            prev_ids=prev_ids,
            auth_ids=[],
            state_before={},
            state_before_group=None,
            old_extremities=extremities,
            origin=self.server_name,
        )
        await self._state_after_all(p, prev_events)
        state_before = p.state_before
        if guard is not None:
            await guard(state_before)
        body: dict[str, object] = dict(content)
        pdu: dict[str, object] = {
            "type": event_type,
            "room_id": room_id,
            "sender": sender,
            "content": body,
            "origin_server_ts": int(time.time() * 1000),
            "depth": depth,
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if redacts is not None:
            if version.redacts_in_content:
                body["redacts"] = redacts
            else:
                pdu["redacts"] = redacts
        if version.event_ids_in_pdu:
            pdu["origin"] = self.server_name
        auth_ids = [
            state_before[key]
            for key in auth_types_for_event(room_version, pdu)
            if key in state_before
        ]
        needed = await self.store.get_events([*auth_ids, *prev_ids])
        pdus = {eid: ev.pdu for eid, ev in needed.items()}
        pdu["prev_events"] = building.edges(room_version, prev_ids, pdus)
        pdu["auth_events"] = building.edges(room_version, auth_ids, pdus)
        event_id, signed = building.finish_pdu(
            pdu, room_version, self.server_name, self._signing_key
        )
        self._check_format(signed, room_version)
        auth_map: dict[StateKey, Mapping[str, object]] = {
            (ev.type, ev.state_key or ""): ev.pdu for ev in (needed[a] for a in auth_ids)
        }
        if version.hydra:
            await self._add_create(room_id, auth_map)
        try:
            check_auth(room_version, signed, auth_map)
        except AuthError as e:
            raise MatrixError(403, "M_FORBIDDEN", str(e)) from None
        if redacts is not None and event_type == "m.room.redaction":
            await self._check_local_redaction(room_id, room_version, sender, redacts, auth_map)
        p.event_id, p.pdu, p.auth_ids = event_id, signed, auth_ids
        return p

    async def _check_local_redaction(
        self,
        room_id: str,
        room_version: str,
        sender: str,
        redacts: str,
        auth_map: Mapping[StateKey, Mapping[str, object]],
    ) -> None:
        """A client's redaction: its own event or the redact level (core/client_actions)."""
        target = await self.store.get_event(redacts)
        pl = auth_map.get(("m.room.power_levels", ""))
        pl_content = pl.get("content") if pl is not None else None
        try:
            check_local_redaction(
                room_version,
                room_id,
                sender,
                target.pdu if target is not None and target.rejected is None else None,
                pl_content if isinstance(pl_content, Mapping) else None,
                auth_map[CREATE_KEY],
            )
        except ActionRefused as e:
            raise MatrixError(e.status, e.errcode, e.message) from None

    @staticmethod
    def _check_format(pdu: dict[str, object], room_version: str) -> None:
        """client-server-api "Size limits" (413 ``M_TOO_LARGE``, as Synapse answers for
        the whole event and for the 255-byte keys), then the version's event format."""
        try:
            size = len(encode_canonical_json(pdu))
        except (TypeError, ValueError) as e:
            raise MatrixError(400, "M_BAD_JSON", f"invalid event: {e}") from None
        if size > MAX_PDU_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", f"event is {size} bytes (> {MAX_PDU_BYTES})")
        for key in ("sender", "room_id", "state_key", "type", "event_id"):
            value = pdu.get(key)
            if isinstance(value, str) and len(value.encode("utf-8")) > MAX_KEY_BYTES:
                raise MatrixError(413, "M_TOO_LARGE", f"{key} is longer than {MAX_KEY_BYTES} bytes")
        try:
            validate_pdu(pdu, room_version)
        except EventFormatError as e:
            raise MatrixError(400, "M_BAD_JSON", f"invalid event: {e}") from None

    async def _add_create(
        self,
        room_id: str,
        auth_map: dict[StateKey, Mapping[str, object]],
        known: Mapping[str, StoredEvent] | None = None,
    ) -> None:
        create_id = building.create_event_id_for_room(room_id)
        create = (known or {}).get(create_id) or await self.store.get_event(create_id)
        if create is not None:
            auth_map[CREATE_KEY] = create.pdu

    async def _events(
        self, event_ids: Sequence[str], known: Mapping[str, StoredEvent] | None
    ) -> dict[str, StoredEvent]:
        """The events among ``event_ids`` in ``known`` or stored."""
        found = {e: known[e] for e in event_ids if known and e in known}
        rest = [e for e in event_ids if e not in found]
        if rest:
            found.update(await self.store.get_events(rest))
        return found

    # --- state -----------------------------------------------------------------------

    async def _state_after_all(self, p: _Prepared, prev_events: Mapping[str, StoredEvent]) -> None:
        """Set ``p.state_before`` to the state after ``prev_events`` resolved together.

        With one prev state its group is reused; otherwise the resolved state will be
        stored as a delta on one of the prev groups (``p.base_group``).
        """
        groups = sorted({ev.state_after for ev in prev_events.values() if ev.state_after})
        if len(groups) == 1:
            p.state_before_group = groups[0]
            p.state_before = await self.store.group_state(groups[0])
            return
        states = [await self.store.group_state(g) for g in groups]
        p.state_before = await self._resolve(p.room_version, states)
        p.state_before_group = None
        if groups:
            p.base_group, p.base_state = groups[0], states[0]

    async def resolve_states(
        self, room_version: str, states: Sequence[Mapping[StateKey, str]]
    ) -> dict[StateKey, str]:
        """Resolve state sets whose events are all stored (state resolution of the
        room's version; one set is returned as it is)."""
        return await self._resolve(room_version, states)

    async def _resolve(
        self,
        room_version: str,
        states: Sequence[Mapping[StateKey, str]],
        new: _Prepared | None = None,
    ) -> dict[StateKey, str]:
        """Resolve state sets; ``new`` is an event not stored yet that they may hold.

        Delta resolution from the auth-chain index (``rooms/resolver.py``)."""
        unstored = Unstored(new.event_id, new.pdu, new.auth_ids) if new is not None else None
        return await self.resolver.resolve(room_version, states, unstored)

    async def _state_pdus(
        self, state: Mapping[StateKey, str], keys: Sequence[StateKey]
    ) -> dict[StateKey, Mapping[str, object]]:
        wanted = {k: state[k] for k in keys if k in state}
        events = await self.store.get_events(wanted.values())
        return {k: events[eid].pdu for k, eid in wanted.items() if eid in events}

    # --- persisting --------------------------------------------------------------------

    async def _persist(self, p: _Prepared, in_txn: TxnHook | None = None) -> PersistedEvent:
        """Compute the state after the event and the new current state, then store it
        all in one transaction. Runs under the room's lock."""
        state_after = p.state_before
        if p.state_key is not None and p.rejected is None and not p.outlier:
            state_after = {**p.state_before, p.state_key: p.event_id}
        current_delta: dict[StateKey, str | None] = {}
        extremities_removed: list[str] = []
        # Only live events move the room's front: backfill and outliers never touch
        # its forward extremities or current state.
        live = p.rejected is None and not p.soft_failed and p.kind is EventKind.NEW
        # An event whose children are already in the graph (it filled a gap) is no
        # forward extremity; its prev events stop being extremities all the same.
        joins_graph = live and not p.has_children
        p.at_current = False
        if live:
            old = p.old_extremities
            if old is None:
                old = await self.store.forward_extremities(p.room_id)
            old_ids = {eid for eid, _ in old}
            # On top of every extremity: the state before it is the current state.
            p.at_current = old_ids == set(p.prev_ids)
            extremities_removed = sorted(old_ids & set(p.prev_ids))
            remaining = old_ids - set(p.prev_ids)
            if joins_graph:
                current_delta = await self._current_delta(p, state_after, old, remaining)
            elif extremities_removed and remaining:
                current_delta = await self._current_delta(p, None, old, remaining)
        memberships = await self._memberships(current_delta, p)
        now_ms = int(time.time() * 1000)
        hooks = [*self._txn_hooks, in_txn] if in_txn else self._txn_hooks
        try:
            result = await self.store.db.write(
                _persist_txn,
                p,
                state_after,
                current_delta,
                memberships,
                extremities_removed,
                joins_graph,
                now_ms,
                hooks,
            )
        except BaseException:
            self.store.forget_extremities(p.room_id)
            raise
        stream_ordering, before_group, after_group = result
        added = (p.event_id, p.depth, stream_ordering) if joins_graph else None
        self.store.update_extremities(p.room_id, extremities_removed, added)
        # The state after last: the next event of the room reads it, so when a big
        # room's states fill the cache it is the one kept.
        if before_group is not None and before_group != after_group:
            self.store.remember_group(before_group, p.state_before)
        if after_group is not None:
            self.store.remember_group(after_group, state_after)
        if p.new_room_creator is not None:
            self.store.remember_room_version(p.room_id, p.room_version)
        stored = StoredEvent(
            event_id=p.event_id,
            room_id=p.room_id,
            stream_ordering=stream_ordering,
            pdu=p.pdu,
            depth=p.depth,
            outlier=p.outlier,
            soft_failed=p.soft_failed,
            rejected=p.rejected,
            state_before=before_group,
            state_after=after_group,
        )
        self.store.remember_event(stored)
        persisted = _persisted(p, stream_ordering, bool(current_delta), before_group)
        for listener in self._listeners:
            try:
                listener(persisted)
            except Exception:
                # The event is committed: a failing listener must neither turn the
                # send into an error nor keep waiting syncs from waking.
                log.exception("listener %r failed on %s", listener, p.event_id)
        if persisted.live:
            self._notifier.notify(stream_ordering, p.room_id, _members_changed(p, current_delta))
        return persisted

    async def _current_delta(
        self,
        p: _Prepared,
        state_after: dict[StateKey, str] | None,
        old: Sequence[tuple[str, int]],
        remaining: set[str],
    ) -> dict[StateKey, str | None]:
        """How the room's current state changes when the forward extremities become
        ``remaining`` plus (unless ``state_after`` is None) the event ``p``."""
        if (
            state_after is not None
            and not remaining
            and len(old) == 1
            and p.prev_ids == [old[0][0]]
            and p.state_before_group is not None
        ):
            # The linear case: the current state is the state after the one extremity,
            # which is the state before this event (the same group): only the event's
            # own key changes. Saves reading the whole current state per event.
            if state_after is p.state_before:
                return {}  # not a state event: nothing changes
            return _own_key_delta(p)
        old_current = await self.store.current_state_ids(p.room_id)
        others = await self.store.get_events(remaining)
        states = [] if state_after is None else [state_after]
        states += [await self.store.group_state(ev.state_after) for ev in others.values()]
        new_current = await self._resolve(p.room_version, states, p)
        return state_store.state_delta(old_current, new_current)

    async def _memberships(
        self, delta: Mapping[StateKey, str | None], p: _Prepared
    ) -> dict[str, str]:
        member_ids = [eid for (t, _), eid in delta.items() if t == "m.room.member" and eid]
        # Read in SQL, not parsed: a big room's first state has tens of thousands.
        others = [e for e in member_ids if e != p.event_id]
        stored = await self.store.db.read(event_store.memberships_of, others) if others else {}
        result: dict[str, str] = {}
        for eid in member_ids:
            membership = _content(p.pdu).get("membership") if eid == p.event_id else stored.get(eid)
            if isinstance(membership, str):
                result[eid] = membership
        return result

    # --- remote events -------------------------------------------------------------------

    async def receive_pdu(
        self,
        pdu: dict[str, object],
        room_version: str,
        keys: Mapping[str, Mapping[str, VerifyKey]],
        *,
        kind: EventKind = EventKind.NEW,
        state_before: Mapping[StateKey, str] | None = None,
        origin: str | None = None,
    ) -> PersistedEvent:
        """Accept a PDU from another server (or one fetched for an auth chain).

        Args:
            pdu: The event as received.
            room_version: The room's version (known from the room or the request).
            keys: Verify keys of the servers that must have signed it.
            kind: Live (``NEW``), old history (``BACKFILL``) or held without state
                (``OUTLIER``: auth chain or state events of a join); see the module
                docstring.
            state_before: The state before the event, when its prev events are not
                known here (from ``/state_ids``); otherwise computed from prev events.
            origin: The server that handed it over (default: its sender's server).

        Returns:
            What was stored: rejected events are stored (so they are not fetched
            again) with the reason; soft-failed events are stored but not shown. An
            event already stored (with state, or as an outlier when ``OUTLIER`` is
            asked) is returned as it is; an outlier received again as ``NEW`` or
            ``BACKFILL`` gets its state and its place.

        Raises:
            EventFormatError: malformed; dropped, nothing stored.
            SignatureError: a required signature is missing or wrong; dropped.
            MissingEventsError: auth events (or, without ``state_before``, prev events)
                are unknown here; fetch them and try again.
        """
        event_id, pdu = self._verify_remote(pdu, room_version, keys)
        if kind is EventKind.NEW and self._policy_resign is not None and "room_id" in pdu:
            existing = await self.store.get_event(event_id)
            if existing is None or existing.outlier:
                pdu = await self._policy_resign(str(pdu["room_id"]), room_version, pdu)
        return await self._receive_verified(event_id, pdu, room_version, kind, state_before, origin)

    async def _receive_verified(
        self,
        event_id: str,
        pdu: dict[str, object],
        room_version: str,
        kind: EventKind,
        state_before: Mapping[StateKey, str] | None,
        origin: str | None,
        backfill_ordering: int | None = None,
    ) -> PersistedEvent:
        room_id = self._remote_room_id(pdu, room_version, event_id)
        async with self._locks(room_id):
            existing = await self.store.get_event(event_id)
            if existing is not None and (kind is EventKind.OUTLIER or not existing.outlier):
                return _as_persisted(existing)
            prepared = await self._check_remote(
                pdu, room_version, room_id, event_id, state_before, kind
            )
            prepared.existing_outlier = existing is not None
            prepared.origin = origin or _server_of(pdu.get("sender"))
            if kind is EventKind.BACKFILL:
                if backfill_ordering is None:
                    backfill_ordering = await self._reserve_backfill(1)
                prepared.backfill_ordering = backfill_ordering
            return await self._persist(prepared)

    async def receive_batch(
        self,
        room_id: str,
        room_version: str,
        pdus: Sequence[dict[str, object]],
        keys: Mapping[str, Mapping[str, VerifyKey]],
        *,
        kind: EventKind = EventKind.OUTLIER,
        origin: str | None = None,
    ) -> list[PersistedEvent]:
        """Accept many PDUs of one room at once (a ``send_join`` answer's state and auth
        chain as outliers; a ``/backfill`` answer).

        Each PDU gets the checks of :meth:`receive_pdu` (format, signatures, content
        hash, auth against its auth events, which may be in the batch). PDUs that fail
        format or signature checks are dropped (logged), as ``receive_pdu`` drops them.
        Outliers are then stored :data:`BATCH_TXN_EVENTS` per write transaction, in
        auth order. Other kinds need each event's state, computed from the one before:
        they go in one by one, oldest (lowest depth) first.

        Returns:
            What was stored (or was already), in the order processed.

        Raises:
            MissingEventsError: auth events neither in the batch nor stored here;
                nothing was stored. For ``NEW``/``BACKFILL``, as ``receive_pdu``
                (events before the failing one stay stored).
            EventFormatError: the room is known with another version.
        """
        verified: dict[str, dict[str, object]] = {}
        for pdu in pdus:
            try:
                event_id, checked = self._verify_remote(pdu, room_version, keys)
            except (EventFormatError, SignatureError) as e:
                log.info("dropping a PDU of a batch for %s: %s", room_id, e)
                continue
            if self._remote_room_id(checked, room_version, event_id) != room_id:
                log.info("dropping %s of a batch for %s: another room", event_id, room_id)
                continue
            verified[event_id] = checked
        ordered = _graph_order(verified, room_version)
        if kind is not EventKind.OUTLIER:
            first = None
            if kind is EventKind.BACKFILL:
                first = await self._reserve_backfill(len(ordered))
            return [
                await self._receive_verified(
                    event_id,
                    verified[event_id],
                    room_version,
                    kind,
                    None,
                    origin,
                    None if first is None else first + i,
                )
                for i, event_id in enumerate(ordered)
            ]
        async with self._locks(room_id):
            return await self._receive_outliers(room_id, room_version, verified, ordered, origin)

    async def _receive_outliers(
        self,
        room_id: str,
        room_version: str,
        pdus: Mapping[str, dict[str, object]],
        ordered: Sequence[str],
        origin: str | None,
    ) -> list[PersistedEvent]:
        existing = await self.store.db.read(event_store.get_events, ordered)
        cited = {a for eid in ordered for a in auth_event_ids(pdus[eid], room_version)}
        known: dict[str, StoredEvent] = dict(existing)
        outside = [a for a in cited if a not in pdus and a not in known]
        known.update(await self.store.db.read(event_store.get_events, outside))
        missing = sorted(a for a in outside if a not in known)
        if missing:
            raise MissingEventsError(missing, "auth")
        results: dict[str, PersistedEvent] = {
            eid: _as_persisted(ev) for eid, ev in existing.items()
        }
        todo: list[_Prepared] = []
        stored_version = await self.store.room_version(room_id)
        if stored_version is not None and stored_version != room_version:
            raise EventFormatError(
                f"room {room_id} is version {stored_version}, not {room_version}"
            )
        room_known = stored_version is not None
        for event_id in ordered:
            if event_id in existing:
                continue
            p = await self._check_remote(
                pdus[event_id],
                room_version,
                room_id,
                event_id,
                None,
                EventKind.OUTLIER,
                known=known,
                room_known=room_known,
            )
            p.origin = origin or _server_of(p.pdu.get("sender"))
            if p.new_room_creator is not None:
                room_known = True
            known[event_id] = _pending_stored(p)
            todo.append(p)
        now_ms = int(time.time() * 1000)
        for i in range(0, len(todo), BATCH_TXN_EVENTS):
            chunk = todo[i : i + BATCH_TXN_EVENTS]
            streams = await self.store.db.write(
                _persist_outliers_txn, chunk, now_ms, list(self._txn_hooks)
            )
            for p, stream in zip(chunk, streams, strict=True):
                if p.new_room_creator is not None:
                    self.store.remember_room_version(p.room_id, p.room_version)
                persisted = _persisted(p, stream, False, None)
                results[p.event_id] = persisted
                for listener in self._listeners:
                    listener(persisted)
        return [results[eid] for eid in ordered if eid in results]

    async def _reserve_backfill(self, n: int) -> int:
        """The first of ``n`` consecutive stream orderings below every event stored or
        reserved before. A batch of backfill is numbered upwards in DAG order; each
        later backfill (older history, as backfill goes back in time) goes below it.
        This writer is the only one that stores events, so the floor is kept here."""
        if self._backfill_floor is None:
            floor = await self.store.db.read(event_store.lowest_ordering)
            if self._backfill_floor is None:  # not set by another task meanwhile
                self._backfill_floor = floor
        self._backfill_floor -= n
        return self._backfill_floor

    @staticmethod
    def _verify_remote(
        pdu: dict[str, object], room_version: str, keys: Mapping[str, Mapping[str, VerifyKey]]
    ) -> tuple[str, dict[str, object]]:
        """Format and signatures (else raise), then the content hash (a mismatch
        redacts the event): server-server-api.md "Checks performed on receipt"."""
        validate_pdu(pdu, room_version)
        verify_event_signatures(pdu, room_version, keys)
        event_id = compute_event_id(pdu, room_version)
        if not check_content_hash(pdu):
            log.info("content hash mismatch on %s: redacting it", event_id)
            pdu = redact(pdu, room_version)
        return event_id, pdu

    @staticmethod
    def _remote_room_id(pdu: Mapping[str, object], room_version: str, event_id: str) -> str:
        if pdu.get("type") == "m.room.create" and get_room_version(room_version).hydra:
            return "!" + event_id[1:]
        return str(pdu["room_id"])

    async def _check_remote(
        self,
        pdu: dict[str, object],
        room_version: str,
        room_id: str,
        event_id: str,
        given_state: Mapping[StateKey, str] | None,
        kind: EventKind,
        *,
        known: Mapping[str, StoredEvent] | None = None,
        room_known: bool = False,
    ) -> _Prepared:
        """The checks of a remote PDU; ``known`` holds events of the same batch (not
        stored yet) and ``room_known`` says the room is known (or made known by the
        batch) with version ``room_version``."""
        version = get_room_version(room_version)
        auth_ids = auth_event_ids(pdu, room_version)
        prev_ids = prev_event_ids(pdu, room_version)
        is_create = pdu.get("type") == "m.room.create"
        outlier = kind is EventKind.OUTLIER
        # A batch checked the version once (and may have made the room known itself).
        known_version = room_version if room_known else await self.store.room_version(room_id)
        if known_version is not None and known_version != room_version:
            raise EventFormatError(f"room {room_id} is version {known_version}, not {room_version}")
        auth_events = await self._events(auth_ids, known)
        missing = [a for a in auth_ids if a not in auth_events]
        if missing:
            raise MissingEventsError(missing, "auth")
        p = _Prepared(
            room_id=room_id,
            room_version=room_version,
            event_id=event_id,
            pdu=pdu,
            depth=_int(pdu.get("depth")),
            prev_ids=prev_ids,
            auth_ids=auth_ids,
            state_before={},
            state_before_group=None,
            kind=kind,
        )
        if not is_create and known_version is None:
            if version.hydra:
                raise MissingEventsError([building.create_event_id_for_room(room_id)], "create")
            # v1-v11: an accepted create event among its (all known) auth events would
            # have made the room known, so it cites none (rule 2.4) or a rejected one.
            p.rejected = "auth events: no accepted m.room.create event"
            return p
        if not is_create and not prev_ids:
            p.rejected = "format: an event other than m.room.create has no prev_events"
            return p
        if not outlier:
            # The state before the event comes first, so that a rejected event still
            # gets a state (its prev state; server-server-api.md "Rejection": later
            # events may cite it and their state is "calculated as normal").
            await self._state_before_remote(p, given_state)
            p.has_children = await self.store.db.read(event_store.has_children, event_id)
        if is_create:
            try:
                await self._check_one_create(p, known_version)
            except AuthError as e:
                p.rejected = f"create: {e}"
                return p
        auth_map: dict[StateKey, Mapping[str, object]] = {
            (ev.type, ev.state_key or ""): ev.pdu for ev in auth_events.values()
        }
        if version.hydra and not is_create:
            await self._add_create(room_id, auth_map, known)
        rejected_auth = [a for a, ev in auth_events.items() if ev.rejected is not None]
        try:
            if rejected_auth:
                raise AuthError(
                    "auth_events.rejected", f"auth event {rejected_auth[0]} was rejected"
                )
            check_auth(room_version, pdu, auth_map)
        except AuthError as e:
            p.rejected = f"auth events: {e}"
            return p
        if is_create and known_version is None:
            p.new_room_creator = str(pdu.get("sender"))
        if outlier:
            return p
        keys = [*auth_types_for_event(room_version, pdu), CREATE_KEY]
        partial = room_id in self.store.partial_rooms
        try:
            before = await self._with_create(p, keys)
            if partial:
                # The room's state lacks most members until the resync ends: authorise
                # against it plus the event's own auth events, and never soft-fail
                # (as Synapse does for partial-state rooms; issue #11).
                for key, auth_pdu in auth_map.items():
                    if key in keys:
                        before.setdefault(key, auth_pdu)
            check_auth_against_state(room_version, pdu, before)
        except AuthError as e:
            p.rejected = f"state before: {e}"
            return p
        if kind is EventKind.BACKFILL or partial:
            return p  # old history: no soft failure against today's state (as Synapse)
        current = await self.store.current_state_ids(room_id)
        try:
            state_pdus = await self._state_pdus(current, keys)
            if state_pdus:
                check_auth_against_state(room_version, pdu, state_pdus)
        except AuthError as e:
            log.info("soft-failing %s: %s", event_id, e)
            p.soft_failed = True
            return p
        # server-server-api.md "Checks performed on receipt of a PDU" step 7 (v1.18):
        # without a valid signature of the room's policy server (in current state), the
        # event is soft-failed. Synapse (federation/federation_base.py) does the same.
        policy = await room_policy(self.store, current, self.server_name)
        if needs_signature(pdu, room_version, policy):
            assert policy is not None
            log.info("soft-failing %s: no valid signature of %s", event_id, policy.server_name)
            p.soft_failed = True
        return p

    async def _check_one_create(self, p: _Prepared, known_version: str | None) -> None:
        """A room has one create event: refuse another one for a room we know (v1-v11
        room IDs are not derived from the create event, so another could claim one)."""
        if known_version is None:
            return
        existing = await self.store.db.read(event_store.get_create_event_id, p.room_id)
        if existing is not None and existing != p.event_id:
            raise AuthError("create.duplicate", f"the room already has create event {existing}")

    async def _with_create(
        self, p: _Prepared, keys: Sequence[StateKey]
    ) -> dict[StateKey, Mapping[str, object]]:
        state_pdus = await self._state_pdus(p.state_before, keys)
        if CREATE_KEY not in state_pdus and get_room_version(p.room_version).hydra:
            await self._add_create(p.room_id, state_pdus)
        return state_pdus

    async def _state_before_remote(
        self, p: _Prepared, given_state: Mapping[StateKey, str] | None
    ) -> None:
        if p.pdu.get("type") == "m.room.create":
            return
        prevs = await self.store.get_events(p.prev_ids)
        # Rejected prev events count: their state is the state before them (it was not
        # updated with them; server-server-api.md "Rejection").
        usable = {
            eid: ev for eid, ev in prevs.items() if not ev.outlier and ev.state_after is not None
        }
        if len(usable) == len(p.prev_ids) and usable:
            await self._state_after_all(p, usable)
        elif given_state is not None:
            # Checked in SQL: a big room's state is not read just to see it is there.
            gaps = await self.store.db.read(event_store.unknown_event_ids, given_state.values())
            if gaps:
                raise MissingEventsError(gaps, "state")
            p.state_before = dict(given_state)
            base = next(iter(usable.values())).state_after if usable else None
            if base is None:
                base = await self._latest_group(p.room_id)
            if base is not None:
                # Stored as a delta on what we hold of the room (e.g. a second join of
                # a big room after a leave): rows for what changed, not a snapshot.
                p.base_group = base
                p.base_state = await self.store.group_state(base)
        else:
            raise MissingEventsError([e for e in p.prev_ids if e not in usable], "prev")

    async def _latest_group(self, room_id: str) -> int | None:
        """The state group after the room's deepest forward extremity, if any."""
        for event_id, _ in await self.store.forward_extremities(room_id):
            ev = await self.store.get_event(event_id)
            if ev is not None and ev.state_after is not None:
                return ev.state_after
        return None


def _server_of(user_id: object) -> str | None:
    return user_id.partition(":")[2] or None if isinstance(user_id, str) else None


def _graph_order(pdus: Mapping[str, Mapping[str, object]], room_version: str) -> list[str]:
    """The batch's event IDs with every event after the batch events it cites (auth and
    prev edges), shallowest first among those ready. Events in a cycle (only possible
    with v1/v2's free-form IDs) are dropped: none of them can be authorised first."""
    cites = {
        eid: {
            e
            for e in (*auth_event_ids(pdu, room_version), *prev_event_ids(pdu, room_version))
            if e in pdus and e != eid
        }
        for eid, pdu in pdus.items()
    }
    children: dict[str, list[str]] = {}
    for eid, deps in cites.items():
        for dep in deps:
            children.setdefault(dep, []).append(eid)
    waiting = {eid: len(deps) for eid, deps in cites.items()}
    ready = [(_int(pdus[eid].get("depth")), eid) for eid, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, eid = heapq.heappop(ready)
        order.append(eid)
        for child in children.get(eid, ()):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (_int(pdus[child].get("depth")), child))
    if len(order) < len(pdus):
        log.info("dropping %d event(s) of a batch in an edge cycle", len(pdus) - len(order))
    return order


def _pending_stored(p: _Prepared) -> StoredEvent:
    """A checked batch event as the batch's later events see it (not stored yet)."""
    return StoredEvent(
        event_id=p.event_id,
        room_id=p.room_id,
        stream_ordering=0,
        pdu=p.pdu,
        depth=p.depth,
        outlier=True,
        soft_failed=False,
        rejected=p.rejected,
        state_before=None,
        state_after=None,
    )


def _persist_outliers_txn(
    conn: sqlite3.Connection, chunk: Sequence[_Prepared], now_ms: int, hooks: Sequence[TxnHook]
) -> list[int]:
    """Many outliers in one write transaction; their stream orderings."""
    streams = []
    for p in chunk:
        if p.new_room_creator is not None:
            event_store.insert_room(conn, p.room_id, p.room_version, p.new_room_creator, now_ms)
        stream = event_store.insert_event(
            conn,
            p.event_id,
            p.room_id,
            p.pdu,
            depth=p.depth,
            prev_ids=p.prev_ids,
            auth_ids=p.auth_ids,
            received_ms=now_ms,
            outlier=True,
            rejected=p.rejected,
        )
        for hook in hooks:
            hook(conn, _persisted(p, stream, False, None))
        streams.append(stream)
    return streams


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def stored_kind(ev: StoredEvent) -> EventKind:
    """The kind an event was stored as: outliers have no state, backfilled events a
    negative stream ordering."""
    if ev.outlier:
        return EventKind.OUTLIER
    return EventKind.BACKFILL if ev.stream_ordering < 0 else EventKind.NEW


def _as_persisted(ev: StoredEvent) -> PersistedEvent:
    return PersistedEvent(
        event_id=ev.event_id,
        room_id=ev.room_id,
        stream_ordering=ev.stream_ordering,
        pdu=ev.pdu,
        rejected=ev.rejected,
        soft_failed=ev.soft_failed,
        kind=stored_kind(ev),
        state_before=ev.state_before,
        at_current=False,
    )


def _persist_txn(
    conn: sqlite3.Connection,
    p: _Prepared,
    state_after: dict[StateKey, str],
    current_delta: Mapping[StateKey, str | None],
    memberships: Mapping[str, str],
    extremities_removed: Sequence[str],
    joins_graph: bool,
    now_ms: int,
    hooks: Sequence[TxnHook] = (),
) -> tuple[int, int | None, int | None]:
    """Everything about one event, in the caller's (one) write transaction."""
    if p.new_room_creator is not None:
        event_store.insert_room(conn, p.room_id, p.room_version, p.new_room_creator, now_ms)
    before_group = p.state_before_group
    after_group: int | None = None
    if not p.outlier:
        if before_group is None and p.state_before:
            base_state = p.base_state if p.base_group is not None else None
            before_group = state_store.create_group(
                conn, p.room_id, p.state_before, p.base_group, base_state
            )
        after_group = before_group
        if state_after is not p.state_before:
            after_group = state_store.create_group(
                conn,
                p.room_id,
                state_after,
                before_group,
                p.state_before if before_group else None,
                delta=_own_key_delta(p),
            )
    ordering = p.backfill_ordering if p.kind is EventKind.BACKFILL else None
    if p.existing_outlier:
        stream = event_store.de_outlier_event(
            conn,
            p.event_id,
            soft_failed=p.soft_failed,
            rejected=p.rejected,
            state_before=before_group,
            state_after=after_group,
            stream_ordering=ordering,
        )
    else:
        stream = event_store.insert_event(
            conn,
            p.event_id,
            p.room_id,
            p.pdu,
            depth=p.depth,
            prev_ids=p.prev_ids,
            auth_ids=p.auth_ids,
            received_ms=now_ms,
            outlier=p.outlier,
            soft_failed=p.soft_failed,
            rejected=p.rejected,
            state_before=before_group,
            state_after=after_group,
            stream_ordering=ordering,
        )
    if p.rejected is None and not p.soft_failed and not p.outlier:
        redacts = _redacts(p.pdu, p.room_version)
        if redacts is not None:
            event_store.insert_redaction(conn, p.event_id, redacts, now_ms)
    added = [p.event_id] if joins_graph else []
    event_store.set_forward_extremities(conn, p.room_id, extremities_removed, added)
    state_store.apply_current_state_delta(conn, p.room_id, current_delta, memberships)
    if hooks:
        persisted = _persisted(p, stream, bool(current_delta), before_group)
        for hook in hooks:
            hook(conn, persisted)
    return stream, before_group, after_group


def _own_key_delta(p: _Prepared) -> dict[StateKey, str | None]:
    """How the event's own state key changes the state before it (the state after a
    state event differs only there): no walk over a big room's whole state."""
    key = p.state_key
    if key is None or p.state_before.get(key) == p.event_id:
        return {}
    return {key: p.event_id}


def _persisted(
    p: _Prepared, stream_ordering: int, state_changed: bool, state_before: int | None
) -> PersistedEvent:
    return PersistedEvent(
        event_id=p.event_id,
        room_id=p.room_id,
        stream_ordering=stream_ordering,
        pdu=p.pdu,
        rejected=p.rejected,
        soft_failed=p.soft_failed,
        kind=p.kind,
        origin=p.origin,
        state_changed=state_changed,
        state_before=state_before,
        at_current=p.at_current,
    )


def _redacts(pdu: Mapping[str, object], room_version: str) -> str | None:
    if pdu.get("type") != "m.room.redaction":
        return None
    if get_room_version(room_version).redacts_in_content:
        target = _content(pdu).get("redacts")
    else:
        target = pdu.get("redacts")
    return target if isinstance(target, str) else None
