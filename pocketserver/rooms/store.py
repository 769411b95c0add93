"""Cached reads of the room DAG: events, state groups, room versions, forward extremities.

Caches are byte-bounded LRUs from the memory budget. Events and state groups never
change once written (a redaction is applied on read, a censored event is evicted),
so cached values are never stale. Forward extremities do change, but only in the
room writer's transactions, under the room's lock: the writer updates the cached
list after each commit (and drops it when a write fails).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pocketserver.cache import LruCache, MemoryBudget
from pocketserver.storage import events as event_store
from pocketserver.storage import state as state_store
from pocketserver.storage.db import Database
from pocketserver.storage.events import StoredEvent

StateKey = tuple[str, str]

# A state entry costs about this much in a cached dict (tuple key, two strings, slot).
_STATE_ENTRY_BYTES = 260

Extremity = tuple[str, int, int]
"""(event_id, depth, stream ordering) of a forward extremity."""


@dataclass(frozen=True, slots=True)
class _CompactEvent:
    """A cached non-state event: its PDU as compact JSON text, parsed on each read.

    A parsed message PDU costs 1.5-3 KB of Python objects, its text about 650 bytes.
    State events are read on every auth check and initial /sync, so they are kept
    parsed; a message is kept compact until a client first reads it (see
    :meth:`RoomStore.get_events`), then parsed: most are read by /sync soon after they
    are sent, many times, or not until history is paged."""

    event_id: str
    room_id: str
    stream_ordering: int
    text: str
    depth: int
    outlier: bool
    soft_failed: bool
    rejected: str | None
    state_before: int | None
    state_after: int | None

    def parsed_size(self) -> int:
        """The estimate of :func:`_event_size` for the parsed event, from the text."""
        return 400 + 5 * len(self.text)

    def stored(self, pdu: dict[str, object]) -> StoredEvent:
        return StoredEvent(
            self.event_id,
            self.room_id,
            self.stream_ordering,
            pdu,
            self.depth,
            self.outlier,
            self.soft_failed,
            self.rejected,
            self.state_before,
            self.state_after,
        )


_Cached = StoredEvent | _CompactEvent


def _compact(ev: StoredEvent) -> _Cached:
    if "state_key" in ev.pdu:
        return ev
    return _CompactEvent(
        ev.event_id,
        ev.room_id,
        ev.stream_ordering,
        json.dumps(ev.pdu, ensure_ascii=False, separators=(",", ":")),
        ev.depth,
        ev.outlier,
        ev.soft_failed,
        ev.rejected,
        ev.state_before,
        ev.state_after,
    )


def _event_size(ev: _Cached) -> int:
    if isinstance(ev, _CompactEvent):
        # The slotted record, its ints and IDs, its text (up to 4 bytes a character).
        text = len(ev.text) * (1 if ev.text.isascii() else 4)
        return 450 + len(ev.event_id) + len(ev.room_id) + text
    # JSON text size is a fair proxy; the parsed dict is roughly 3-4x its text.
    return 400 + 4 * len(str(ev.pdu))


def _state_size(state: dict[StateKey, str]) -> int:
    return 200 + _STATE_ENTRY_BYTES * len(state)


def _extremities_size(extremities: list[Extremity]) -> int:
    return 120 + sum(200 + len(eid) for eid, _, _ in extremities)


class RoomStore:
    """Read access to events and state for the room writer and everything above it."""

    def __init__(self, db: Database, budget: MemoryBudget) -> None:
        self.db = db
        self._events: LruCache[str, _Cached] = budget.cache("events", 0.30, _event_size)
        self._groups: LruCache[int, dict[StateKey, str]] = budget.cache(
            "state_groups", 0.30, _state_size
        )
        self._versions: LruCache[str, str] = budget.cache("room_versions", 0.01)
        self.partial_rooms: dict[str, tuple[str, ...]] = {}
        """Rooms joined with a partial state -> the servers known to be in them
        (federation/partial_state.py keeps it; the writer and the sender read it)."""
        self._extremities: LruCache[str, list[Extremity]] = budget.cache(
            "forward_extremities", 0.005, _extremities_size
        )

    async def room_version(self, room_id: str) -> str | None:
        cached = self._versions.get(room_id)
        if cached is not None:
            return cached
        version = await self.db.read(event_store.get_room_version, room_id)
        if version is not None:
            self._versions.set(room_id, version)
        return version

    def remember_room_version(self, room_id: str, version: str) -> None:
        self._versions.set(room_id, version)

    async def get_event(self, event_id: str) -> StoredEvent | None:
        cached = self._events.get(event_id)
        if isinstance(cached, _CompactEvent):
            return cached.stored(json.loads(cached.text))
        if cached is not None:
            return cached
        ev = await self.db.read(event_store.get_event, event_id)
        if ev is not None:
            self._events.set(event_id, _compact(ev))
        return ev

    async def get_events(
        self, event_ids: Iterable[str], *, keep_parsed: bool = False, remember: bool = True
    ) -> dict[str, StoredEvent]:
        """The known events among ``event_ids``.

        ``keep_parsed``: the events are being read for clients (/sync, history), which
        read the same recent events many times: a message cached compact is kept parsed
        from now on. The room writer's reads (prev events) leave it compact.
        ``remember=False``: a one-off read of many events (a big room's members,
        streamed): those not cached are not added, so they do not push out the rest."""
        hits: list[_Cached] = []
        missing: list[str] = []
        for event_id in event_ids:
            cached = self._events.get(event_id)
            if cached is None:
                missing.append(event_id)
            else:
                hits.append(cached)
        texts = [c.text for c in hits if isinstance(c, _CompactEvent)]
        # One parse for all: the parser shares the key strings between the events.
        pdus = iter(json.loads("[" + ",".join(texts) + "]") if texts else ())
        found: dict[str, StoredEvent] = {}
        for c in hits:
            if isinstance(c, _CompactEvent):
                ev = found[c.event_id] = c.stored(next(pdus))
                if keep_parsed and remember:
                    self._events.set(c.event_id, ev, c.parsed_size())
            else:
                found[c.event_id] = c
        if missing:
            loaded = await self.db.read(event_store.get_events, missing)
            if remember:
                for event_id, ev in loaded.items():
                    self._events.set(event_id, _compact(ev))
            found.update(loaded)
        return found

    def remember_event(self, ev: StoredEvent) -> None:
        self._events.set(ev.event_id, _compact(ev))

    def forget_event(self, event_id: str) -> None:
        self._events.pop(event_id)

    async def group_state(self, group_id: int | None) -> dict[StateKey, str]:
        """The full state of a group (empty for None). Callers must not mutate it."""
        if group_id is None:
            return {}
        cached = self._groups.get(group_id)
        if cached is not None:
            return cached
        state = await self.db.read(state_store.get_group_state, group_id)
        self._groups.set(group_id, state)
        return state

    def remember_group(self, group_id: int, state: dict[StateKey, str]) -> None:
        self._groups.set(group_id, state)

    def forget_groups(self) -> None:
        """Stored groups changed (a partial-state room was completed): read them again."""
        self._groups.clear()

    async def auth_chain_ids(self, event_ids: Iterable[str]) -> set[str]:
        return await self.db.read(event_store.get_auth_chain_ids, list(event_ids))

    async def current_state_ids(self, room_id: str) -> dict[StateKey, str]:
        return await self.db.read(state_store.get_current_state_ids, room_id)

    async def forward_extremities(self, room_id: str) -> list[tuple[str, int]]:
        """(event_id, depth) of the room's forward extremities, deepest first (as
        :func:`storage.events.get_forward_extremities`). Call under the room's lock."""
        cached = self._extremities.get(room_id)
        if cached is None:
            cached = await self.db.read(event_store.get_forward_extremities_ordered, room_id)
            self._extremities.set(room_id, cached)
        return [(eid, depth) for eid, depth, _ in cached]

    def update_extremities(
        self, room_id: str, removed: Sequence[str], added: Extremity | None
    ) -> None:
        """The writer committed this change of the room's forward extremities."""
        cached = self._extremities.pop(room_id)
        if cached is None:
            return
        gone = set(removed)
        if added is not None:
            gone.add(added[0])
        kept = [x for x in cached if x[0] not in gone]
        if added is not None:
            kept.append(added)
        kept.sort(key=lambda x: (x[1], x[2]), reverse=True)
        self._extremities.set(room_id, kept)

    def forget_extremities(self, room_id: str) -> None:
        """A write of the room failed: read its extremities from the database again."""
        self._extremities.pop(room_id)
