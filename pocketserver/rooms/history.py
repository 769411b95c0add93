"""Room history for clients: ``/messages`` pagination and ``/context`` around an event.

Spec: client-server-api "Getting events for a room" (data/api/client-server/
message_pagination.yaml, event_context.yaml).

Order. History follows the room DAG (topological order): events are ordered by
``(depth, stream_ordering)``, as Synapse orders by ``(topological_ordering,
stream_ordering)``. For events created here the two orders agree; they differ for
events that arrive late (a fork merged from another server) and for backfilled
history, which has negative stream orderings (storage/events.py) and so sorts before
every live event of the same depth and never shows past a sync token.

Tokens. ``t<depth>-<stream>`` is the boundary just before the event at that key
(``<stream>`` may be negative: ``t5--3``): going backwards from it gives the events
before that key, forwards those at it and after. ``t<N>`` (no second number) is a
*stream* boundary, just before stream position N: a sync ``prev_batch``, and every
token this server gave before history followed the DAG, so clients holding one keep
paging. A sync ``next_batch`` (``p...``) is the stream boundary after its event
position. From a stream boundary, /messages reads events by stream position but
returns them in topological order, and the ``end`` it gives is topological (as
Synapse does with its ``s`` tokens). Anything else is 400 ``M_INVALID_PARAM``.
/sync keeps its own stream tokens (sync/token.py).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pocketserver.core.event_filter import EventFilter
from pocketserver.errors import MatrixError, forbidden, not_found
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.reading import ReadEvent
from pocketserver.rooms.visibility import filter_visible
from pocketserver.storage import history as history_store
from pocketserver.streams.token import PREFIX as SYNC_TOKEN_PREFIX
from pocketserver.streams.token import SyncToken

TOKEN_PREFIX = "t"
MAX_LIMIT = 1000
END = 1 << 62
"""A stream position after every event (an exclusive upper bound meaning "no bound")."""
ROOM_START_STREAM = -(1 << 62)
"""Below every stream ordering (backfilled ones count down from -1)."""
SCAN_BATCHES = 5
"""One request reads at most this many batches when filters or history visibility
hide events, then answers with what it found and a token to go on from."""
_STREAM_TOKEN = re.compile(r"t(-?[0-9]{1,18})")
_TOPO_TOKEN = re.compile(r"t([0-9]{1,18})-(-?[0-9]{1,18})")


@dataclass(frozen=True, slots=True)
class Position:
    """A boundary in a room's history: just before the key ``(depth, stream)``, or
    with ``depth`` None just before stream position ``stream``."""

    depth: int | None
    stream: int

    def encode(self) -> str:
        if self.depth is None:
            return f"{TOKEN_PREFIX}{self.stream}"
        return f"{TOKEN_PREFIX}{self.depth}-{self.stream}"

    @property
    def bound(self) -> history_store.Bound:
        return (self.depth, self.stream)


ROOM_START = Position(0, ROOM_START_STREAM)
"""Before every event (depths are never negative: core/events.py)."""


def before_event(depth: int, stream: int) -> Position:
    return Position(depth, stream)


def after_event(depth: int, stream: int) -> Position:
    return Position(depth, stream + 1)


def parse_token(text: str) -> Position:
    """The boundary a pagination token names (see the module docstring).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` if it is not a token of this server.
    """
    if m := _STREAM_TOKEN.fullmatch(text):
        return Position(None, int(m[1]))
    if m := _TOPO_TOKEN.fullmatch(text):
        return Position(int(m[1]), int(m[2]))
    if text.startswith(SYNC_TOKEN_PREFIX):
        try:
            return Position(None, SyncToken.parse(text).events + 1)
        except MatrixError:
            pass
    raise MatrixError(400, "M_INVALID_PARAM", "invalid pagination token")


def parse_position(text: str) -> int:
    """The stream position of a pagination token (for stream-ordered readers:
    ``/relations``, ``/members?at=``, legacy ``/events``).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` if it is not a token of this server.
    """
    return parse_token(text).stream


def encode_position(position: int) -> str:
    """A stream boundary token (``t<N>``)."""
    return Position(None, position).encode()


@dataclass(frozen=True, slots=True)
class Access:
    """How a user may read a room's history."""

    member: bool
    """Joined now, or joined once and left: ``shared`` history before their join is
    theirs to read (as Synapse: only a world-readable peeker is not a member)."""
    upto: Position | None
    """An exclusive bound: a user who left sees nothing after their leave."""

    def allows(self, depth: int, stream: int) -> bool:
        """Whether the event at ``(depth, stream)`` is before the bound."""
        if self.upto is None:
            return True
        if self.upto.depth is None:
            return stream < self.upto.stream
        return (depth, stream) < (self.upto.depth, self.upto.stream)

    def cap(self, position: int) -> int:
        """A stream position capped to the bound (for stream-ordered readers)."""
        return position if self.upto is None else min(position, self.upto.stream)


async def room_access(client: RoomClient, user_id: str, room_id: str) -> Access:
    """Whether and how far ``user_id`` may read the room (members, former members up to
    their leave, anyone in a world-readable room).

    Raises:
        MatrixError: 403 ``M_FORBIDDEN`` otherwise (also for an unknown room).
    """
    if await client.store.room_version(room_id) is None:
        raise forbidden("you are not allowed to view this room")
    membership, event_id = await client.membership_of(room_id, user_id)
    if membership == "join":
        return Access(member=True, upto=None)
    if membership in ("leave", "ban") and event_id is not None:
        event = await client.store.get_event(event_id)
        if event is not None:
            return Access(member=True, upto=after_event(event.depth, event.stream_ordering))
    if await client.is_world_readable(room_id):
        return Access(member=False, upto=None)
    raise forbidden("you are not allowed to view this room")


@dataclass(frozen=True, slots=True)
class Page:
    events: list[ReadEvent]
    position: Position
    """The boundary after the last event read (whether it was returned or not)."""
    more: bool
    """Whether there may be more events past ``position``."""


@dataclass(frozen=True, slots=True)
class Messages:
    chunk: list[ReadEvent]
    start: Position
    end: Position | None
    state: list[ReadEvent]


@dataclass(frozen=True, slots=True)
class Context:
    event: ReadEvent
    before: list[ReadEvent]
    after: list[ReadEvent]
    start: Position
    end: Position
    state: list[ReadEvent]


def _not_ignored(pdu: dict[str, object], ignored: frozenset[str]) -> bool:
    """Events of ignored users are hidden, except state (as /sync does)."""
    return "state_key" in pdu or pdu.get("sender") not in ignored


Backfill = Callable[[str, int, int, int | None], Awaitable[int]]
"""``(room_id, limit, low_depth, high_depth) -> events stored``: fill the holes of our
history between those depths from another server (federation/remote_backfill.py); 0
when there is none or it failed."""
BACKFILL_ROUNDS = 2
"""Backfill requests one ``/messages`` call may make at most (each to at most two
servers)."""


class History:
    def __init__(self, client: RoomClient, backfill: Backfill | None = None) -> None:
        self.client = client
        self.store = client.store
        self.reader = client.reader
        self.backfill = backfill

    async def paginate(
        self,
        user_id: str,
        room_id: str,
        access: Access,
        *,
        start: Position,
        bound: Position | None,
        forwards: bool,
        limit: int,
        flt: EventFilter,
        ignored: frozenset[str] = frozenset(),
    ) -> Page:
        """Up to ``limit`` events the user may see, going from ``start`` towards
        ``bound`` (None: the end of history in that direction), in topological order."""
        lower: list[history_store.Bound] = []
        upper: list[history_store.Bound] = [] if access.upto is None else [access.upto.bound]
        if forwards:
            lower.append(start.bound)
            if bound is not None:
                upper.append(bound.bound)
        else:
            upper.append(start.bound)
            if bound is not None:
                lower.append(bound.bound)
        base_lower, base_upper = list(lower), list(upper)
        position = start
        found: list[ReadEvent] = []
        if limit <= 0:
            return Page(found, position, True)
        more = True
        for _ in range(SCAN_BATCHES):
            want = max(limit - len(found), 20)
            rows = await self.store.db.read(
                history_store.room_events, room_id, lower, upper, forwards, want + 1
            )
            more = len(rows) > want
            rows = rows[:want]
            events = await self.reader.get_events(eid for eid, _, _ in rows)
            candidates = [
                events[eid]
                for eid, _, _ in rows
                if eid in events
                and flt.matches(events[eid].pdu)
                and _not_ignored(events[eid].pdu, ignored)
            ]
            seen = await filter_visible(self.store, user_id, candidates, joined_now=access.member)
            visible = {ev.event_id: ev for ev in seen}  # as shown (erased senders: redacted)
            for i, (eid, depth, so) in enumerate(rows):
                position = after_event(depth, so) if forwards else before_event(depth, so)
                if eid in visible:
                    found.append(visible[eid])
                if len(found) >= limit:
                    more = more or i < len(rows) - 1
                    break
            # Go on after the last event read.
            if forwards:
                lower = [*base_lower, position.bound]
            else:
                upper = [*base_upper, position.bound]
            if not more or len(found) >= limit:
                break
        return Page(found, position, more)

    async def messages(
        self,
        user_id: str,
        room_id: str,
        *,
        from_pos: Position | None,
        to_pos: Position | None,
        forwards: bool,
        limit: int,
        flt: EventFilter,
        ignored: frozenset[str] = frozenset(),
    ) -> Messages:
        """``GET /rooms/{roomId}/messages``.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if the user may not read the room.
        """
        access = await room_access(self.client, user_id, room_id)
        if from_pos is None:
            from_pos = (
                ROOM_START
                if forwards
                else Position(None, await self.store.db.read(history_store.next_position))
            )
        limit = min(limit, MAX_LIMIT)
        rounds = 0 if forwards or self.backfill is None else BACKFILL_ROUNDS
        while True:
            page = await self.paginate(
                user_id,
                room_id,
                access,
                start=from_pos,
                bound=to_pos,
                forwards=forwards,
                limit=limit,
                flt=flt,
                ignored=ignored,
            )
            # The page may span a hole in our copy of the history (a room joined over
            # federation, before the join; time away before a rejoin): fill it from
            # another server and read the page again.
            if rounds == 0 or self.backfill is None:
                break
            rounds -= 1
            low = (page.position.depth or 0) if page.more else 0
            if to_pos is not None and to_pos.depth is not None:
                low = max(low, to_pos.depth)
            if not await self.backfill(room_id, limit, low, from_pos.depth):
                break
        state: list[ReadEvent] = []
        if flt.lazy_load_members and page.events:
            state = await self._members_at(page.events[0], page.events)
        # A page with events always has an ``end``; only an empty page at the end of the
        # history has none. That is Synapse's rule (the spec would omit ``end`` already
        # on the page that reaches the start of the room), and SyTest checks it
        # ("GET /rooms/:room_id/messages returns a message", "A next_batch token can be
        # used in the v1 messages API"); clients stop at the empty page either way.
        more = page.more or bool(page.events)
        return Messages(page.events, from_pos, page.position if more else None, state)

    async def context(
        self,
        user_id: str,
        room_id: str,
        event_id: str,
        *,
        limit: int,
        flt: EventFilter,
        ignored: frozenset[str] = frozenset(),
    ) -> Context:
        """``GET /rooms/{roomId}/context/{eventId}``: ``limit`` split between before and
        after; the filter applies to those and to the state, not to the event.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if the user may not read the room, 404
                ``M_NOT_FOUND`` if the event is unknown or hidden from them.
        """
        access = await room_access(self.client, user_id, room_id)
        event = await self.visible_event(user_id, room_id, event_id, access)
        stored = await self.store.get_event(event_id)
        depth = stored.depth if stored is not None else 0
        limit = min(limit, MAX_LIMIT)
        before = await self.paginate(
            user_id,
            room_id,
            access,
            start=before_event(depth, event.stream_ordering),
            bound=None,
            forwards=False,
            limit=limit // 2,
            flt=flt,
            ignored=ignored,
        )
        after = await self.paginate(
            user_id,
            room_id,
            access,
            start=after_event(depth, event.stream_ordering),
            bound=None,
            forwards=True,
            limit=limit - limit // 2,
            flt=flt,
            ignored=ignored,
        )
        last = after.events[-1] if after.events else event
        shown = [*before.events, event, *after.events]
        if flt.lazy_load_members:
            state = await self._members_at(last, shown)
        else:
            stored = await self.store.get_event(last.event_id)
            ids = await self.store.group_state(stored.state_after if stored else None)
            found = await self.reader.get_events(ids.values())
            state = [found[i] for i in ids.values() if i in found]
        state = [ev for ev in state if flt.matches(ev.pdu)]
        return Context(event, before.events, after.events, before.position, after.position, state)

    async def visible_event(
        self, user_id: str, room_id: str, event_id: str, access: Access
    ) -> ReadEvent:
        """The event, if it is in the room and the user may see it.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` otherwise.
        """
        found = await self.reader.get_events([event_id])
        event = found.get(event_id)
        if event is None or event.room_id != room_id:
            raise not_found("event not found")
        stored = await self.store.get_event(event_id)
        if (
            stored is None
            or stored.outlier
            or not access.allows(stored.depth, stored.stream_ordering)
        ):
            raise not_found("event not found")
        shown = await filter_visible(self.store, user_id, [event], joined_now=access.member)
        if not shown:
            raise not_found("event not found")
        return shown[0]

    async def _members_at(self, at: ReadEvent, events: Sequence[ReadEvent]) -> list[ReadEvent]:
        """Lazy-loaded members: the member events of the senders of ``events`` in the
        state after ``at`` (client-server API "Lazy-loading room members")."""
        stored = await self.store.get_event(at.event_id)
        state = await self.store.group_state(stored.state_after if stored else None)
        senders = dict.fromkeys(str(ev.pdu.get("sender")) for ev in events)
        ids = [state[("m.room.member", s)] for s in senders if ("m.room.member", s) in state]
        found = await self.reader.get_events(ids)
        return [found[i] for i in ids if i in found]
