"""Room history for clients: ``/messages`` pagination and ``/context`` around an event.

Spec: client-server-api "Getting events for a room" (data/api/client-server/
message_pagination.yaml, event_context.yaml). Events are ordered by stream
ordering, the order in which this server accepted them. That is the topological
order for every event created here; once federation backfills older history, a
topological order (depth) will be needed for events that arrive late.

Pagination tokens are ``t<N>``: the boundary just before stream position N. Going
backwards from it gives the events before N; forwards, those at N and after. A
sync ``prev_batch`` is such a token, and a sync ``next_batch`` (``p...``) is taken
as the boundary after its event position, so both can be used as ``from``.
"""

from __future__ import annotations

from collections.abc import Sequence
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
"""A position after every event (an exclusive upper bound meaning "no bound")."""
SCAN_BATCHES = 5
"""One request reads at most this many batches when filters or history visibility
hide events, then answers with what it found and a token to go on from."""


def parse_position(text: str) -> int:
    """The position a pagination token names.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` if it is not a token of this server.
    """
    if text.startswith(TOKEN_PREFIX):
        digits = text[len(TOKEN_PREFIX) :]
        if digits.isascii() and digits.isdigit() and len(digits) < 19:
            return int(digits)
    elif text.startswith(SYNC_TOKEN_PREFIX):
        try:
            return SyncToken.parse(text).events + 1
        except MatrixError:
            pass
    raise MatrixError(400, "M_INVALID_PARAM", "invalid pagination token")


def encode_position(position: int) -> str:
    return f"{TOKEN_PREFIX}{position}"


@dataclass(frozen=True, slots=True)
class Access:
    """How a user may read a room's history."""

    member: bool
    """Joined now, or joined once and left: ``shared`` history before their join is
    theirs to read (as Synapse: only a world-readable peeker is not a member)."""
    upto: int | None
    """An exclusive bound: a user who left sees nothing after their leave."""

    def cap(self, position: int) -> int:
        return position if self.upto is None else min(position, self.upto)


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
            return Access(member=True, upto=event.stream_ordering + 1)
    if await client.is_world_readable(room_id):
        return Access(member=False, upto=None)
    raise forbidden("you are not allowed to view this room")


@dataclass(frozen=True, slots=True)
class Page:
    events: list[ReadEvent]
    position: int
    """The boundary after the last event read (whether it was returned or not)."""
    more: bool
    """Whether there may be more events past ``position``."""


@dataclass(frozen=True, slots=True)
class Messages:
    chunk: list[ReadEvent]
    start: int
    end: int | None
    state: list[ReadEvent]


@dataclass(frozen=True, slots=True)
class Context:
    event: ReadEvent
    before: list[ReadEvent]
    after: list[ReadEvent]
    start: int
    end: int
    state: list[ReadEvent]


def _not_ignored(pdu: dict[str, object], ignored: frozenset[str]) -> bool:
    """Events of ignored users are hidden, except state (as /sync does)."""
    return "state_key" in pdu or pdu.get("sender") not in ignored


class History:
    def __init__(self, client: RoomClient) -> None:
        self.client = client
        self.store = client.store
        self.reader = client.reader

    async def paginate(
        self,
        user_id: str,
        room_id: str,
        access: Access,
        *,
        start: int,
        bound: int | None,
        forwards: bool,
        limit: int,
        flt: EventFilter,
        ignored: frozenset[str] = frozenset(),
    ) -> Page:
        """Up to ``limit`` events the user may see, going from ``start`` towards
        ``bound`` (a position; None: the end of history in that direction)."""
        if forwards:
            lo, hi = start, access.cap(END if bound is None else bound)
        else:
            lo, hi = bound or 0, access.cap(start)
        position = start
        found: list[ReadEvent] = []
        if limit <= 0 or lo >= hi:
            return Page(found, position, limit <= 0 and lo < hi)
        more = True
        for _ in range(SCAN_BATCHES):
            want = max(limit - len(found), 20)
            rows = await self.store.db.read(
                history_store.room_events, room_id, lo, hi, forwards, want + 1
            )
            more = len(rows) > want
            rows = rows[:want]
            events = await self.reader.get_events(eid for eid, _ in rows)
            candidates = [
                events[eid]
                for eid, _ in rows
                if eid in events
                and flt.matches(events[eid].pdu)
                and _not_ignored(events[eid].pdu, ignored)
            ]
            seen = await filter_visible(self.store, user_id, candidates, joined_now=access.member)
            visible = {ev.event_id: ev for ev in seen}  # as shown (erased senders: redacted)
            for i, (eid, so) in enumerate(rows):
                position = so + 1 if forwards else so
                if eid in visible:
                    found.append(visible[eid])
                if len(found) >= limit:
                    more = more or i < len(rows) - 1
                    break
            if forwards:
                lo = position
            else:
                hi = position
            if not more or len(found) >= limit:
                break
        return Page(found, position, more)

    async def messages(
        self,
        user_id: str,
        room_id: str,
        *,
        from_pos: int | None,
        to_pos: int | None,
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
            from_pos = 0 if forwards else await self.store.db.read(history_store.next_position)
        page = await self.paginate(
            user_id,
            room_id,
            access,
            start=from_pos,
            bound=to_pos,
            forwards=forwards,
            limit=min(limit, MAX_LIMIT),
            flt=flt,
            ignored=ignored,
        )
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
        limit = min(limit, MAX_LIMIT)
        before = await self.paginate(
            user_id,
            room_id,
            access,
            start=event.stream_ordering,
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
            start=event.stream_ordering + 1,
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
        if stored is None or stored.outlier or access.cap(END) <= event.stream_ordering:
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
