"""Relations between events: the index the room writer keeps, ``/relations`` and the
threads list.

Spec: client-server-api "Relationships API" (data/api/client-server/relations.yaml),
modules/threading.md "Querying threads in a room" (threads_list.yaml). Tokens are
the same ``t<N>`` positions as ``/messages`` (see ``rooms/history.py``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from pocketserver.core.redaction import redact
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.history import END, History, room_access
from pocketserver.rooms.reading import ReadEvent
from pocketserver.rooms.visibility import filter_visible
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.storage import relations as relation_store

MAX_RECURSION_DEPTH = 3
"""``recurse=true`` follows relations this many levels down (the spec asks for at
least 3; Synapse uses 3)."""
MAX_LIMIT = 1000


def index_relation(conn: sqlite3.Connection, event: PersistedEvent) -> None:
    """Room writer transaction hook: index the relation of an accepted event."""
    if event.rejected is None and not event.soft_failed and not event.outlier:
        relation_store.insert_relation(
            conn, event.event_id, event.room_id, event.pdu, event.stream_ordering
        )


@dataclass(frozen=True, slots=True)
class ChildPage:
    chunk: list[ReadEvent]
    next_position: int | None
    recursion_depth: int


@dataclass(frozen=True, slots=True)
class ThreadPage:
    roots: list[ReadEvent]
    next_position: int | None


class RelationReader:
    def __init__(self, client: RoomClient) -> None:
        self.client = client
        self.store = client.store
        self.reader = client.reader
        self.history = History(client)

    async def children(
        self,
        user_id: str,
        room_id: str,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_pos: int | None,
        to_pos: int | None,
        forwards: bool,
        limit: int,
        recurse: bool,
        ignored: frozenset[str] = frozenset(),
    ) -> ChildPage:
        """The child events of a parent the user may see, newest first (oldest first
        going forwards).

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if the user may not read the room, 404
                ``M_NOT_FOUND`` if the parent is unknown or hidden from them.
        """
        access = await room_access(self.client, user_id, room_id)
        await self.history.visible_event(user_id, room_id, parent_id, access)
        if forwards:
            lo, hi = from_pos or 0, END if to_pos is None else to_pos
        else:
            lo, hi = to_pos or 0, END if from_pos is None else from_pos
        hi = access.cap(hi)
        limit = min(limit, MAX_LIMIT)
        depth = MAX_RECURSION_DEPTH if recurse else 1
        rows = await self.store.db.read(
            relation_store.children,
            room_id,
            parent_id,
            rel_type,
            event_type,
            lo,
            hi,
            forwards,
            limit + 1,
            depth,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        found = await self.reader.get_events(eid for eid, _ in rows)
        candidates = [
            found[eid]
            for eid, _ in rows
            if eid in found
            and relation_store.relation_of(found[eid].pdu) is not None
            and found[eid].pdu.get("sender") not in ignored
        ]
        chunk = await filter_visible(self.store, user_id, candidates, joined_now=access.member)
        next_position = None
        if more and rows:
            last = rows[-1][1]
            next_position = last + 1 if forwards else last
        return ChildPage(chunk, next_position, depth)

    async def threads(
        self,
        user_id: str,
        room_id: str,
        *,
        from_pos: int | None,
        limit: int,
        participated: bool,
        ignored: frozenset[str] = frozenset(),
    ) -> ThreadPage:
        """The room's thread roots, most recently active first. A root sent by an
        ignored user is returned redacted (threads_list.yaml).

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if the user may not read the room.
        """
        access = await room_access(self.client, user_id, room_id)
        limit = min(limit, MAX_LIMIT)
        rows = await self.store.db.read(
            relation_store.thread_roots,
            room_id,
            access.cap(END if from_pos is None else from_pos),
            limit + 1,
            user_id if participated else None,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        found = await self.reader.get_events(eid for eid, _ in rows)
        roots = [found[eid] for eid, _ in rows if eid in found and found[eid].room_id == room_id]
        roots = await filter_visible(self.store, user_id, roots, joined_now=access.member)
        shown = [_redacted(ev) if ev.pdu.get("sender") in ignored else ev for ev in roots]
        return ThreadPage(shown, rows[-1][1] if more and rows else None)


def _redacted(ev: ReadEvent) -> ReadEvent:
    if ev.redacted_because is not None:
        return ev
    return ReadEvent(
        ev.event_id,
        ev.room_id,
        ev.stream_ordering,
        redact(ev.pdu, ev.room_version),
        ev.room_version,
    )
