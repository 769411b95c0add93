"""Reading events as clients may see them: redactions applied, rejected events hidden.

The stored JSON stays the original until the retention period has passed (see
``retention.py``); until then a valid redaction is applied each time the event is
read (rooms/fragments/v3-handling-redactions.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pocketserver.cache import LruCache, MemoryBudget
from pocketserver.core.redaction import redact, redaction_applies, redaction_target
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.storage import events as event_store
from pocketserver.storage.events import StoredEvent


@dataclass(frozen=True, slots=True)
class ReadEvent:
    """An event as it may be shown: ``pdu`` is redacted if a redaction applies."""

    event_id: str
    room_id: str
    stream_ordering: int
    pdu: dict[str, object]
    room_version: str
    redacted_because: dict[str, object] | None = None
    redacted_because_id: str | None = None


class EventReader:
    """Reads events with redactions applied.

    Which redactions name an event is cached: the cache is keyed by a generation
    that every stored redaction bumps (``on_persisted``, a writer listener), so an
    entry read before a redaction arrived is never used after it.
    """

    def __init__(self, store: RoomStore, budget: MemoryBudget | None = None) -> None:
        self.store = store
        self._generation = 0
        self._redactions: LruCache[str, tuple[int, tuple[str, ...]]] | None = (
            budget.cache("redactions_of", 0.01) if budget is not None else None
        )

    def on_persisted(self, event: PersistedEvent) -> None:
        """Writer listener: a stored redaction invalidates the cached lookups."""
        if event.pdu.get("type") == "m.room.redaction":
            self._generation += 1

    async def _redactions_of(self, event_ids: list[str]) -> dict[str, tuple[str, ...]]:
        generation = self._generation
        cache = self._redactions
        result: dict[str, tuple[str, ...]] = {}
        missing = []
        for eid in event_ids:
            hit = cache.get(eid) if cache is not None else None
            if hit is not None and hit[0] == generation:
                result[eid] = hit[1]
            else:
                missing.append(eid)
        if missing:
            found = await self.store.db.read(event_store.get_redactions_of, missing)
            for eid in missing:
                ids = tuple(found.get(eid, ()))
                result[eid] = ids
                if cache is not None:
                    cache.set(eid, (generation, ids))
        return result

    async def get_events(
        self, event_ids: Iterable[str], *, remember: bool = True
    ) -> dict[str, ReadEvent]:
        """The accepted events among ``event_ids`` (rejected and soft-failed ones are
        left out), each with any applicable redaction applied. ``remember=False``: do
        not cache them (see :meth:`RoomStore.get_events`)."""
        stored = await self.store.get_events(event_ids, keep_parsed=True, remember=remember)
        visible = {
            eid: ev for eid, ev in stored.items() if ev.rejected is None and not ev.soft_failed
        }
        for eid in await self._withheld_redactions(visible):
            del visible[eid]
        redactions = await self._redactions_of(list(visible))
        result: dict[str, ReadEvent] = {}
        for eid, ev in visible.items():
            version = await self.store.room_version(ev.room_id) or "1"
            found = await self._applicable_redaction(ev, redactions.get(eid, ()))
            if found is None:
                result[eid] = ReadEvent(eid, ev.room_id, ev.stream_ordering, ev.pdu, version)
            else:
                because_id, because = found
                result[eid] = ReadEvent(
                    eid,
                    ev.room_id,
                    ev.stream_ordering,
                    redact(ev.pdu, version),
                    version,
                    because,
                    because_id,
                )
        return result

    async def _withheld_redactions(self, events: Mapping[str, StoredEvent]) -> list[str]:
        """The redaction events among ``events`` that are not shown to clients: their
        target is unknown here, in another room, the create event, or one they may
        not redact (room v3+ accepts such redactions into the DAG; the spec only says
        they are not applied, rooms/fragments/v3-handling-redactions.md). As Synapse
        (events_worker ``_get_events_from_cache_or_db`` "Withholding redaction")."""
        redactions = {
            eid: ev
            for eid, ev in events.items()
            if ev.type == "m.room.redaction" and ev.state_key is None
        }
        if not redactions:
            return []
        targets = {eid: redaction_target(ev.pdu) for eid, ev in redactions.items()}
        known = await self.store.get_events(t for t in targets.values() if t)
        withheld = []
        for eid, red in redactions.items():
            target = known.get(targets[eid] or "")
            if (
                target is None
                or target.rejected is not None
                or (target.type == "m.room.create" and target.state_key == "")
                or not await self._applies(red, target)
            ):
                withheld.append(eid)
        return withheld

    async def _applies(self, red: StoredEvent, target: StoredEvent) -> bool:
        version = await self.store.room_version(target.room_id)
        if version is None or red.state_before is None:
            return False
        pl, create = await self._state_contents(await self.store.group_state(red.state_before))
        return create is not None and redaction_applies(red.pdu, target.pdu, version, pl, create)

    async def _applicable_redaction(
        self, target: StoredEvent, redaction_ids: Iterable[str]
    ) -> tuple[str, dict[str, object]] | None:
        ids = list(redaction_ids)
        if not ids:
            return None
        version = await self.store.room_version(target.room_id)
        if version is None:
            return None
        redactions = await self.store.get_events(ids)
        for rid in ids:
            red = redactions.get(rid)
            if red is None or red.rejected is not None or red.soft_failed:
                continue
            if await self._applies(red, target):
                return rid, red.pdu
        return None

    async def _state_contents(
        self, state: Mapping[tuple[str, str], str]
    ) -> tuple[Mapping[str, object] | None, Mapping[str, object] | None]:
        wanted = [state.get(("m.room.power_levels", "")), state.get(("m.room.create", ""))]
        events = await self.store.get_events(e for e in wanted if e)
        pl_event = events.get(wanted[0] or "")
        create_event = events.get(wanted[1] or "")
        pl_content = pl_event.pdu.get("content") if pl_event else None
        return (
            pl_content if isinstance(pl_content, Mapping) else None,
            create_event.pdu if create_event else None,
        )
