"""Bundled aggregations: what ``unsigned.m.relations`` says about an event's children.

Spec: client-server-api "Aggregations of child events"; modules/threading.md
("Server-side aggregation of m.thread relationships"), event_replacements.md
("Server-side aggregation of m.replace relationships", v1.7+: the most recent
valid replacement), reference_relations.md. ``m.annotation`` is not aggregated.

One database read answers a whole response's events (plus one for the children of
thread ``latest_event``\\s, which are bundled in turn). State events get no bundle.
Children that were redacted, that the user may not see, or that ignored users sent
do not count; a redacted original gets no ``m.replace`` bundle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pocketserver.rooms.reading import EventReader, ReadEvent
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.visibility import filter_visible
from pocketserver.storage import relations as relation_store

MAX_PARENTS = 2000
"""Events bundled per response at most (a response never holds more than this)."""


@dataclass(frozen=True, slots=True)
class Thread:
    latest: ReadEvent
    latest_relations: Relations | None
    count: int
    participated: bool


@dataclass(frozen=True, slots=True)
class Relations:
    thread: Thread | None = None
    replace: ReadEvent | None = None
    references: tuple[str, ...] = ()


def _rel_type(ev: ReadEvent) -> str | None:
    rel = relation_store.relation_of(ev.pdu)
    return rel.rel_type if rel else None


async def bundle(
    store: RoomStore,
    reader: EventReader,
    user_id: str,
    events: Iterable[ReadEvent],
    *,
    ignored: frozenset[str] = frozenset(),
    nested: bool = True,
) -> dict[str, Relations]:
    """The bundled aggregations of ``events`` as ``user_id`` may see them, by event ID
    (events without any are absent).

    Args:
        ignored: users whose child events are left out.
        nested: also bundle each thread's ``latest_event`` (one more read).
    """
    parents = [ev for ev in events if "state_key" not in ev.pdu][:MAX_PARENTS]
    if not parents:
        return {}
    rows = await store.db.read(
        relation_store.aggregation_rows,
        [ev.event_id for ev in parents],
        user_id,
        sorted(ignored),
        sorted({ev.room_id for ev in parents}),
    )
    if not (rows.threads or rows.edits or rows.references):
        return {}
    wanted = [t.latest_id for t in rows.threads.values()] + list(rows.edits.values())
    children = await _visible(store, reader, user_id, wanted, rows.joined_rooms)
    latest_bundles: dict[str, Relations] = {}
    if nested:
        latest = [children[t.latest_id] for t in rows.threads.values() if t.latest_id in children]
        latest_bundles = await bundle(store, reader, user_id, latest, ignored=ignored, nested=False)
    result: dict[str, Relations] = {}
    for parent in parents:
        pid = parent.event_id
        thread = None
        summary = rows.threads.get(pid)
        if summary is not None and summary.latest_id in children:
            thread = Thread(
                latest=children[summary.latest_id],
                latest_relations=latest_bundles.get(summary.latest_id),
                count=summary.count,
                participated=summary.participated or parent.pdu.get("sender") == user_id,
            )
        replace = None
        edit_id = rows.edits.get(pid)
        if (
            edit_id in children
            and parent.redacted_because is None
            and _rel_type(parent) != "m.replace"
        ):
            replace = children[edit_id]
        references = tuple(rows.references.get(pid, ()))
        if thread or replace or references:
            result[pid] = Relations(thread, replace, references)
    return result


async def _visible(
    store: RoomStore,
    reader: EventReader,
    user_id: str,
    event_ids: Sequence[str],
    joined_rooms: frozenset[str],
) -> dict[str, ReadEvent]:
    """The children among ``event_ids`` the user may see, still related (not redacted)."""
    found = await reader.get_events(event_ids)
    by_room: dict[str, list[ReadEvent]] = {}
    for ev in found.values():
        if relation_store.relation_of(ev.pdu) is not None:
            by_room.setdefault(ev.room_id, []).append(ev)
    visible: dict[str, ReadEvent] = {}
    for room_id, evs in by_room.items():
        seen = await filter_visible(store, user_id, evs, joined_now=room_id in joined_rooms)
        visible.update((ev.event_id, ev) for ev in seen)
    return visible
