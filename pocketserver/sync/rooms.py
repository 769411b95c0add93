"""The per-room parts of a /sync response: timeline, state, summary, invite state.

Spec: client-server-api "Syncing" and data/api/client-server/sync.yaml. ``state``
holds the state at the *start* of the timeline (everything between ``since`` and the
timeline start when the timeline is limited); the timeline then carries the rest.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pocketserver.core.event_filter import SyncFilter
from pocketserver.core.events import STRIPPED_STATE_TYPES
from pocketserver.rooms.client_events import client_event, federation_event, stripped_state
from pocketserver.rooms.reading import EventReader, ReadEvent
from pocketserver.rooms.store import RoomStore, StateKey
from pocketserver.rooms.visibility import filter_visible
from pocketserver.storage import out_of_band as oob_store
from pocketserver.storage import stream as stream_store
from pocketserver.storage import transactions as txn_store
from pocketserver.storage.state import state_delta
from pocketserver.sync.lazy_members import MemberMemory, members_to_fetch

FILL_ROUNDS = 3
"""How many more reads a timeline whose events history visibility hid may take."""

Timeline = tuple[list[str], bool]
"""A room's timeline event IDs (oldest first) and whether it is limited."""


@dataclass(frozen=True, slots=True)
class RoomChanges:
    """What an incremental /sync reads in its one database round trip."""

    snapshot: stream_store.SyncSnapshot
    timelines: dict[str, Timeline]
    """Joined rooms with new events: their timelines from ``since``."""
    txn_ids: dict[str, str]
    """Event ID -> transaction ID, for the timeline events the device sent."""


def read_changes(
    conn: sqlite3.Connection,
    user_id: str,
    device_id: str,
    since: int | None,
    limit: int,
    conditions: stream_store.EventConditions,
) -> RoomChanges:
    """The sync snapshot, and for an incremental sync also the timelines of the joined
    rooms with new events and their transaction IDs, in one read transaction.

    A room that turns out to be newly joined is read again from its start by
    :meth:`RoomSyncer.joined_rooms`; its prefetched timeline is then not used."""
    snap = stream_store.sync_snapshot(conn, user_id, since)
    if since is None or since >= snap.upto or not snap.rooms_with_events:
        return RoomChanges(snap, {}, {})
    rooms = sorted(snap.rooms_with_events)
    timelines = stream_store.recent_event_ids_many(
        conn, [(r, since) for r in rooms], snap.upto, limit, conditions
    )
    ids = [eid for event_ids, _ in timelines.values() for eid in event_ids]
    txn_ids = txn_store.transaction_ids_for(conn, user_id, device_id, ids) if ids else {}
    return RoomChanges(snap, timelines, txn_ids)


@dataclass(frozen=True, slots=True)
class RoomSection:
    timeline: list[ReadEvent]
    limited: bool
    state: list[ReadEvent]
    prev_batch: str
    state_after: bool = False
    """``state`` is the state up to the END of the timeline (``use_state_after``)."""


def _content(pdu: Mapping[str, object]) -> Mapping[str, object]:
    content = pdu.get("content")
    return content if isinstance(content, Mapping) else {}


class RoomSyncer:
    """Builds room sections for one user."""

    def __init__(
        self,
        store: RoomStore,
        reader: EventReader,
        user_id: str,
        flt: SyncFilter,
        ignored: frozenset[str] = frozenset(),
    ):
        self.store = store
        self.reader = reader
        self.user_id = user_id
        self.flt = flt
        self.ignored = ignored
        """Users whose non-state events and invites are hidden (ignore_users.md)."""
        self.use_state_after = False
        self.joined_throughout: frozenset[str] = frozenset()
        """Rooms the user was joined to for the whole of (since, upto]: all visible."""
        self.incremental = False
        """An incremental sync: a room sent from scratch in it is marked ``limited``
        (there is history before its timeline the client has not seen), as Synapse does."""
        self.sent_members: MemberMemory | None = None
        """Lazy-loading: the member events the device has been sent (None: unknown)."""

    async def state_at_position(self, room_id: str, position: int) -> dict[StateKey, str]:
        """The room state after the last event at or before ``position``."""
        last = await self.store.db.read(stream_store.last_event_before, room_id, position)
        if last is None:
            return {}
        ev = await self.store.get_event(last)
        return dict(await self.store.group_state(ev.state_after)) if ev else {}

    def _conditions(self) -> stream_store.EventConditions:
        timeline_filter = self.flt.timeline
        return stream_store.EventConditions(
            types=timeline_filter.types,
            not_types=timeline_filter.not_types,
            senders=timeline_filter.senders,
            not_senders=timeline_filter.not_senders,
            contains_url=timeline_filter.contains_url,
        )

    def conditions(self) -> stream_store.EventConditions:
        """The timeline filter's conditions, as :func:`read_changes` takes them."""
        return self._conditions()

    async def joined_rooms(
        self,
        rooms: Sequence[tuple[str, int | None]],
        upto: int,
        *,
        full_state: bool,
        prefetched: Mapping[str, Timeline] | None = None,
    ) -> dict[str, RoomSection]:
        """Sections for several joined rooms (room ID, since); their timelines are read
        in one database round trip, except those in ``prefetched`` (read from the same
        ``since``, up to the same ``upto``, by :func:`read_changes`)."""
        if not rooms:
            return {}
        prefetched = prefetched or {}
        missing = [(r, since or 0) for r, since in rooms if since is None or r not in prefetched]
        timelines = dict(prefetched)
        if missing:
            timelines.update(
                await self.store.db.read(
                    stream_store.recent_event_ids_many,
                    missing,
                    upto,
                    self.flt.timeline_limit,
                    self._conditions(),
                )
            )
        return {
            room_id: await self._section(
                room_id, since, upto, *timelines[room_id], full_state=full_state
            )
            for room_id, since in rooms
        }

    async def joined_room(
        self, room_id: str, since: int | None, upto: int, *, full_state: bool
    ) -> RoomSection:
        """Timeline and state for a joined room; ``since`` None means from the start."""
        ids, limited = await self.store.db.read(
            stream_store.recent_event_ids,
            room_id,
            since or 0,
            upto,
            self.flt.timeline_limit,
            self._conditions(),
        )
        return await self._section(room_id, since, upto, ids, limited, full_state=full_state)

    async def _section(
        self,
        room_id: str,
        since: int | None,
        upto: int,
        ids: list[str],
        limited: bool,
        *,
        full_state: bool,
    ) -> RoomSection:
        events = await self.reader.get_events(ids)
        timeline = [events[i] for i in ids if i in events]
        if since is None or room_id not in self.joined_throughout:
            # A member sees every event of the time they are joined, whatever the
            # history visibility: only other timelines need the check.
            timeline, limited = await self._visible_filled(room_id, since, timeline, limited)
        full = since is None or full_state
        gappy = full or limited or self.use_state_after
        state_ids: dict[StateKey, str] = {}
        changed: set[StateKey] = set()
        at_start: Mapping[StateKey, str] | None = None
        if gappy:
            at_start = await self._state_at_timeline_start(room_id, upto, timeline)
            if full:
                state_ids = dict(at_start)
            else:
                at_since = await self.state_at_position(room_id, since or 0)
                state_ids = {k: v for k, v in state_delta(at_since, at_start).items() if v}
                changed = set(state_ids)
        # else: the whole (since, upto] is in the timeline, which carries every change.
        if self.flt.state.lazy_load_members:
            state_ids = await self._lazy_members(
                room_id, upto, timeline, state_ids, changed, at_start, full=full
            )
        state = await self._state_events(state_ids, timeline, include_timeline=self.use_state_after)
        timeline = [
            ev
            for ev in timeline
            if self.flt.timeline.matches(ev.pdu)
            and ("state_key" in ev.pdu or ev.pdu.get("sender") not in self.ignored)
        ]
        limited = limited or (since is None and self.incremental)
        prev_batch = self._prev_batch(since, upto, timeline, limited)
        return RoomSection(timeline, limited, state, prev_batch, self.use_state_after)

    @staticmethod
    def _prev_batch(
        since: int | None, upto: int, timeline: Sequence[ReadEvent], limited: bool
    ) -> str:
        """The timeline's ``prev_batch``, a ``/messages`` token (rooms/history.py).

        Spec: client-server-api "Syncing": a token "to retrieve earlier events", which
        may be omitted when there are none. Where the timeline has earlier events (it is
        limited, or an incremental sync's), the token is the boundary just before its
        first event: paging back gives exactly those, never the timeline again.

        An initial sync's timeline that is not limited holds the whole room (as far as
        the user may see it): there is nothing earlier. Synapse then gives the sync
        position (``_load_filtered_recents`` keeps ``upto_token``), so paging back gives
        the timeline again and then a page without ``end``; SyTest ("GET
        /rooms/:room_id/messages returns a message", "... lazy loads members
        correctly") requires that page with events and an ``end``, and requires
        ``prev_batch`` itself ("A prev_batch token can be used..."). We do the same for
        interop; clients already drop the events they hold when Synapse does this.
        """
        if since is None and not limited:
            return f"t{upto + 1}"
        return f"t{timeline[0].stream_ordering if timeline else upto + 1}"

    async def _visible_filled(
        self, room_id: str, since: int | None, timeline: list[ReadEvent], limited: bool
    ) -> tuple[list[ReadEvent], bool]:
        """The visible part of a timeline, filled up from older events when history
        visibility hid some (at most :data:`FILL_ROUNDS` more reads), as Synapse's
        ``_load_filtered_recents`` does: a user back in a room whose recent history
        they may not see still gets the events they may see."""
        limit = self.flt.timeline_limit
        visible = await self._visible(timeline)
        oldest = timeline[0].stream_ordering if timeline else None
        rounds = 0
        while limited and len(visible) < limit and oldest is not None and rounds < FILL_ROUNDS:
            rounds += 1
            ids, limited = await self.store.db.read(
                stream_store.recent_event_ids,
                room_id,
                since or 0,
                oldest - 1,
                2 * limit,
                self._conditions(),
            )
            found = await self.reader.get_events(ids)
            batch = [found[i] for i in ids if i in found]
            if not batch:
                break
            oldest = batch[0].stream_ordering
            visible = [*await self._visible(batch), *visible]
        if len(visible) > limit:
            return visible[-limit:], True
        return visible, limited

    async def _state_at_timeline_start(
        self, room_id: str, upto: int, timeline: Sequence[ReadEvent]
    ) -> dict[StateKey, str]:
        """The state before the timeline's first event (with ``use_state_after``, or
        for an empty timeline: the state at ``upto``)."""
        if self.use_state_after or not timeline:
            # The state at the END of the timeline (client-server API: use_state_after).
            return await self.state_at_position(room_id, upto)
        first = await self.store.get_event(timeline[0].event_id)
        return dict(await self.store.group_state(first.state_before if first else None))

    async def _lazy_members(
        self,
        room_id: str,
        upto: int,
        timeline: Sequence[ReadEvent],
        state_ids: dict[StateKey, str],
        changed: set[StateKey],
        at_start: Mapping[StateKey, str] | None,
        *,
        full: bool,
    ) -> dict[StateKey, str]:
        """Lazy-loading members (client-server API "Lazy-loading room members"): the
        member events of the timeline's senders, at the start of the timeline, unless
        the device was sent that same event before (``include_redundant_members``
        turns that off). A full sync keeps only those and the user's own; an
        incremental gappy sync keeps every member change of the gap too, as Synapse
        does (lazy loading is off for the gap: riot-web#7211), and those changes are
        always sent."""
        wanted = members_to_fetch(timeline, every_sender=self.use_state_after)
        if full:
            keep = wanted | {self.user_id}
            state_ids = {
                k: v for k, v in state_ids.items() if k[0] != "m.room.member" or k[1] in keep
            }
        if wanted:
            if at_start is None:
                at_start = await self._state_at_timeline_start(room_id, upto, timeline)
            for member in wanted:
                key = ("m.room.member", member)
                if key in at_start and key not in state_ids:
                    state_ids[key] = at_start[key]
        if self.sent_members is None:
            return state_ids
        # A room sent from scratch (newly joined, rejoined) gets its members again: the
        # client may have dropped what it knew of the room.
        return self.sent_members.send(
            room_id,
            state_ids,
            changed,
            timeline,
            skip_known=not full and not self.flt.state.include_redundant_members,
        )

    async def left_room(self, room_id: str, since: int | None, left_at: int) -> RoomSection:
        """The timeline up to (and including) the user's leave; ``since`` None: the room
        is sent from scratch (full state at the start of the timeline)."""
        return await self.joined_room(room_id, since, left_at, full_state=since is None)

    async def _state_events(
        self,
        state_ids: Mapping[StateKey, str],
        timeline: Sequence[ReadEvent],
        *,
        include_timeline: bool = False,
    ) -> list[ReadEvent]:
        wanted = dict(state_ids)
        timeline_ids = {ev.event_id for ev in timeline}
        if not include_timeline:
            wanted = {k: v for k, v in wanted.items() if v not in timeline_ids}
        events = await self.reader.get_events(wanted.values())
        result = [events[eid] for eid in wanted.values() if eid in events]
        return [ev for ev in result if self.flt.state.matches(ev.pdu)]

    async def _visible(self, events: list[ReadEvent]) -> list[ReadEvent]:
        """History visibility: drop events from before the user could see the room.

        State events that are part of the room's current state stay, whatever the
        visibility: the client needs them to know the room as it is (Synapse's
        ``always_include_ids`` in ``_load_filtered_recents``; matrix-ios-sdk#341)."""
        seen = await filter_visible(self.store, self.user_id, events, joined_now=True)
        if len(seen) == len(events):
            return seen
        kept = {ev.event_id for ev in seen}
        hidden_state = [ev for ev in events if ev.event_id not in kept and "state_key" in ev.pdu]
        if not hidden_state:
            return seen
        current = set((await self.store.current_state_ids(hidden_state[0].room_id)).values())
        kept.update(ev.event_id for ev in hidden_state if ev.event_id in current)
        return [ev for ev in events if ev.event_id in kept]

    async def invited_by_ignored(self, event_id: str) -> bool:
        """Whether an invite was sent by an ignored user: it is not sent (ignore_users.md)."""
        if not self.ignored:
            return False
        ev = await self.store.get_event(event_id)
        return ev is not None and ev.pdu.get("sender") in self.ignored

    async def stripped_room_state(self, room_id: str, own_event_id: str) -> list[dict[str, object]]:
        """Invite or knock state: a few current state events, stripped, plus the user's own."""
        current = await self.store.current_state_ids(room_id)
        ids = [current[(t, "")] for t in STRIPPED_STATE_TYPES if (t, "") in current]
        events = await self.store.get_events([*ids, own_event_id])
        stripped = [stripped_state(events[i].pdu) for i in ids if i in events]
        own = events.get(own_event_id)
        if own is None:
            return stripped
        # The inviter's member event too, as Synapse sends it (clients show who invited;
        # SyTest's third-party invite tests look for it).
        sender = own.pdu.get("sender")
        inviter_id = current.get(("m.room.member", sender)) if isinstance(sender, str) else None
        if inviter_id is not None and sender != own.pdu.get("state_key"):
            inviter = await self.store.get_event(inviter_id)
            if inviter is not None:
                stripped.append(stripped_state(inviter.pdu))
        stripped.append(stripped_state(own.pdu))
        return stripped

    async def out_of_band_state(self, room_id: str, own_event_id: str) -> list[dict[str, object]]:
        """Invite or knock state of a room this server does not hold: the stripped state
        the other server sent (sanitised when stored, rooms/out_of_band.py), then the
        user's own member event."""
        found = await self.store.db.read(oob_store.get, self.user_id, room_id)
        stripped = list(found.stripped_state) if found is not None else []
        own = await self.store.get_event(own_event_id)
        if own is not None:
            stripped.append(stripped_state(own.pdu))
        return stripped

    async def out_of_band_left(self, event_id: str, upto: int) -> RoomSection:
        """A rejected invite or withdrawn knock of a room this server does not hold:
        the leave event alone in the timeline, no state (as Synapse sends an
        out-of-band membership)."""
        found = await self.reader.get_events([event_id])
        timeline = [found[event_id]] if event_id in found else []
        return RoomSection(timeline, False, [], self._prev_batch(None, upto, timeline, False))


def serialise_section(
    section: RoomSection,
    now_ms: int,
    txn_ids: Mapping[str, str],
    *,
    event_format: str = "client",
) -> dict[str, object]:
    def render(ev: ReadEvent, txn_id: str | None = None) -> dict[str, object]:
        if event_format == "federation":
            return federation_event(ev, now_ms, transaction_id=txn_id)
        return client_event(ev, now_ms, include_room_id=False, transaction_id=txn_id)

    return {
        "timeline": {
            "events": [render(ev, txn_ids.get(ev.event_id)) for ev in section.timeline],
            "limited": section.limited,
            "prev_batch": section.prev_batch,
        },
        "state_after" if section.state_after else "state": {
            "events": [render(ev) for ev in section.state]
        },
    }


def ids_of(events: Iterable[ReadEvent]) -> list[str]:
    return [ev.event_id for ev in events]
