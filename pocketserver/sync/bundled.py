"""Serialising bundled aggregations into ``unsigned.m.relations`` of client events.

The aggregations themselves come from ``rooms/aggregations.py``; this puts them in
the wire format of client-server-api "Aggregations of child events".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pocketserver.rooms.aggregations import Relations, bundle
from pocketserver.rooms.client_events import client_event
from pocketserver.rooms.reading import EventReader, ReadEvent
from pocketserver.rooms.store import RoomStore
from pocketserver.sync.rooms import RoomSection


def relations_json(rel: Relations, now_ms: int) -> dict[str, object]:
    """The ``m.relations`` object of one event."""
    out: dict[str, object] = {}
    if rel.thread is not None:
        latest = client_event(rel.thread.latest, now_ms)
        if rel.thread.latest_relations is not None:
            _set(latest, relations_json(rel.thread.latest_relations, now_ms))
        out["m.thread"] = {
            "latest_event": latest,
            "count": rel.thread.count,
            "current_user_participated": rel.thread.participated,
        }
    if rel.replace is not None:
        out["m.replace"] = client_event(rel.replace, now_ms)
    if rel.references:
        out["m.reference"] = {"chunk": [{"event_id": eid} for eid in rel.references]}
    return out


def _set(serialised: dict[str, object], relations: dict[str, object]) -> None:
    if not relations:
        return
    unsigned = serialised.get("unsigned")
    if not isinstance(unsigned, dict):
        unsigned = serialised["unsigned"] = {}
    unsigned["m.relations"] = relations


def add_bundles(
    serialised: Iterable[dict[str, object]], bundles: Mapping[str, Relations], now_ms: int
) -> None:
    """Add each event's bundle (if any) to its serialised form, in place."""
    if not bundles:
        return
    for out in serialised:
        rel = bundles.get(str(out.get("event_id")))
        if rel is not None:
            _set(out, relations_json(rel, now_ms))


async def serialise_bundled(
    store: RoomStore,
    reader: EventReader,
    user_id: str,
    events: Sequence[ReadEvent],
    now_ms: int,
    *,
    ignored: frozenset[str] = frozenset(),
    include_room_id: bool = True,
) -> list[dict[str, object]]:
    """Client events with their bundled aggregations (one read for all of them)."""
    bundles = await bundle(store, reader, user_id, events, ignored=ignored)
    out = [client_event(ev, now_ms, include_room_id=include_room_id) for ev in events]
    add_bundles(out, bundles, now_ms)
    return out


async def sync_bundles(
    store: RoomStore,
    reader: EventReader,
    user_id: str,
    rooms: Mapping[str, Mapping[str, object]],
    ignored: frozenset[str] = frozenset(),
) -> dict[str, Relations]:
    """Bundles for the timelines of /sync's joined and left rooms: only limited
    timelines get them (client-server API "Aggregations of child events")."""
    events = [
        ev
        for kind in ("join", "leave")
        for section in rooms.get(kind, {}).values()
        if isinstance(section, RoomSection) and section.limited
        for ev in section.timeline
    ]
    return await bundle(store, reader, user_id, events, ignored=ignored)


def add_sync_bundles(
    entry: Mapping[str, object], bundles: Mapping[str, Relations], now_ms: int
) -> None:
    """Add bundles to the timeline events of one serialised /sync room entry."""
    timeline = entry.get("timeline")
    events = timeline.get("events") if isinstance(timeline, Mapping) else None
    if isinstance(events, list):
        add_bundles((e for e in events if isinstance(e, dict)), bundles, now_ms)
