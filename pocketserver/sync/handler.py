"""``GET /sync``: what changed for a user between two stream positions.

Each response is computed from one read transaction (so it is consistent), and its
``next_batch`` names the last position that transaction saw. Long-polls wait on the
notifier, which wakes them with a position only; an idle long-poll is one sleeping
task and costs nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields, replace

import trio

from pocketserver.cache import LruCache, MemoryBudget
from pocketserver.core.event_filter import SyncFilter
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.storage import state as state_store
from pocketserver.storage import stream as stream_store
from pocketserver.storage import transactions as txn_store
from pocketserver.storage.stream import Membership, SyncSnapshot
from pocketserver.streams.notifier import EVENTS, Notifier
from pocketserver.streams.token import SyncToken
from pocketserver.sync.bundled import add_sync_bundles, sync_bundles
from pocketserver.sync.heroes import add_hero_members
from pocketserver.sync.lazy_members import SentMembers
from pocketserver.sync.response import drop_empty_rooms, newly_joined_users
from pocketserver.sync.rooms import (
    RoomSection,
    RoomSyncer,
    Timeline,
    read_changes,
    serialise_section,
)
from pocketserver.sync.sources import SyncContext, SyncSource

MAX_TIMEOUT_MS = 5 * 60 * 1000
PARTIAL_STATE_WAIT_S = 60.0
"""How long a sync without lazy-loaded members waits for a partial-state room's resync."""
FULL_SYNC_BUDGET_BYTES = 64 << 20
"""Initial (and full-state) syncs are built at most one per this much of the memory
budget at once, and at least two: each holds every joined room's state and timeline
as Python objects until its answer is encoded (about 1 MB for 10 busy rooms), and
with one event-loop thread running them side by side gains no throughput anyway."""


def full_sync_slots(budget: MemoryBudget | None) -> int:
    if budget is None:
        return 2
    return max(2, budget.total_bytes // FULL_SYNC_BUDGET_BYTES)


JOINED_CACHE_SHARE, JOINED_CACHE_BYTES = 0.01, 1 << 20
FILTER_CACHE_SHARE, FILTER_CACHE_BYTES = 0.002, 256 << 10


def _rooms_needing_summary(join: Mapping[str, object], new_rooms: set[str]) -> list[str]:
    """Summaries are sent for rooms sent from scratch and where membership changed
    (the spec lets a server omit an unchanged summary)."""
    result = []
    for room_id, section in join.items():
        assert isinstance(section, RoomSection)
        members_changed = any(
            ev.pdu.get("type") == "m.room.member" for ev in (*section.timeline, *section.state)
        )
        if room_id in new_rooms or members_changed:
            result.append(room_id)
    return result


def _stream_positions(token: SyncToken) -> dict[str, int]:
    return {f.name: getattr(token, f.name) for f in fields(token) if f.name != "events"}


@dataclass(frozen=True, slots=True)
class SyncRequest:
    user_id: str
    device_id: str
    since: SyncToken | None
    timeout_ms: int
    full_state: bool
    filter: SyncFilter
    use_state_after: bool = False


async def _nobody_ignored(user_id: str) -> frozenset[str]:
    await trio.lowlevel.checkpoint()
    return frozenset()


class SyncHandler:
    def __init__(
        self,
        store: RoomStore,
        reader: EventReader,
        notifier: Notifier,
        budget: MemoryBudget | None = None,
        *,
        ignored_users: Callable[[str], Awaitable[frozenset[str]]] = _nobody_ignored,
    ) -> None:
        self.store = store
        self.reader = reader
        self.notifier = notifier
        self._joined: LruCache[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = (
            budget.cache("sync_joined_rooms", JOINED_CACHE_SHARE)
            if budget is not None
            else LruCache("sync_joined_rooms", JOINED_CACHE_BYTES)
        )
        """User -> (event position of their last snapshot, rooms they were joined to,
        rooms they listen to: joined, invited to or knocking on)."""
        self.filters: LruCache[tuple[str, int], SyncFilter] = (
            budget.cache("sync_filters", FILTER_CACHE_SHARE)
            if budget is not None
            else LruCache("sync_filters", FILTER_CACHE_BYTES)
        )
        """(user, filter ID) -> parsed stored filter (stored filters never change)."""
        self.sent_members = SentMembers(budget)
        """Lazy-loading: which member events each device has been sent."""
        self._full_builds = trio.CapacityLimiter(full_sync_slots(budget))
        self._sources: list[SyncSource] = []
        self._finishers: list[Callable[[SyncContext], Awaitable[None]]] = []
        self.ignored_users = ignored_users
        """From the account data feature: whose events and invites a user ignores."""
        self._wait_full_state: Callable[[str, float], Awaitable[bool]] | None = None

    def set_full_state_wait(self, wait: Callable[[str, float], Awaitable[bool]]) -> None:
        """``wait(room_id, timeout_s)``: until a partial-state room's resync ends
        (federation/partial_state.py ``wait_full_state``)."""
        self._wait_full_state = wait

    def add_source(self, source: SyncSource) -> None:
        """Let another stream (account data, receipts, ...) add its part to responses."""
        self._sources.append(source)

    def add_finisher(self, finisher: Callable[[SyncContext], Awaitable[None]]) -> None:
        """Let a feature without a stream of its own (unread counts) annotate each
        response after every source has added its part."""
        self._finishers.append(finisher)

    async def sync(self, request: SyncRequest) -> dict[str, object]:
        """Answer a sync request, waiting up to its timeout when nothing has changed."""
        if request.since is None or request.full_state:
            async with self._full_builds:
                body, *_ = await self._build(request)
            return body
        if request.timeout_ms <= 0:
            body, *_ = await self._build(request)
            return body
        deadline = trio.current_time() + min(request.timeout_ms, MAX_TIMEOUT_MS) / 1000
        while True:
            body, changed, upto, listening = await self._build(request)
            remaining = deadline - trio.current_time()
            if changed or remaining <= 0 or self.notifier.closing:
                return body
            # Woken only by changes to the rooms listened to or naming the user.
            await self.notifier.wait_for_change(
                upto.events,
                _stream_positions(upto),
                remaining,
                user_id=request.user_id,
                rooms=listening,
            )

    async def _wait_for_partial_rooms(self, request: SyncRequest) -> None:
        """A client that does not lazy-load members must get a room's full state: while
        a room of the user's is joined with a partial state (issue #11), its sync waits
        for the resync, up to :data:`PARTIAL_STATE_WAIT_S` (then it gets what is known).
        Lazy-loading clients (Element, ...) are answered at once from the known state.
        Synapse instead leaves such a room out of their sync until it is complete."""
        if (
            self._wait_full_state is None
            or not self.store.partial_rooms
            or request.filter.state.lazy_load_members
        ):
            return
        joined = await self.store.db.read(state_store.rooms_for_user, request.user_id)
        deadline = trio.current_time() + PARTIAL_STATE_WAIT_S
        for room_id in joined:
            if room_id in self.store.partial_rooms:
                left = max(0.0, deadline - trio.current_time())
                await self._wait_full_state(room_id, left)

    async def _build(
        self, request: SyncRequest
    ) -> tuple[dict[str, object], bool, SyncToken, tuple[str, ...]]:
        """The response, whether it holds anything, its token and the rooms the user
        listens to (joined, invited to, knocking on) as far as the response knows."""
        await self._wait_for_partial_rooms(request)
        # Other streams' positions first: whatever commits after this is sent next time.
        positions = {source.stream: source.position() for source in self._sources}
        quiet = self._quiet_rooms(request)
        if quiet is not None:
            # Nothing happened in any room since the token: no room work, no database.
            events_upto, joined_ids, listening = quiet
            body_rooms: dict[str, object] = {"join": {}, "leave": {}, "invite": {}, "knock": {}}
            new_rooms: set[str] = set()
            newly_joined: set[str] = set()
            changed = False
        else:
            (
                events_upto,
                joined_ids,
                listening,
                body_rooms,
                new_rooms,
                newly_joined,
            ) = await self._room_part(request)
            changed = any(body_rooms[k] for k in ("join", "leave", "invite", "knock"))
        token = replace((request.since or SyncToken()).with_events(events_upto), **positions)
        body: dict[str, object] = {
            "next_batch": token.encode(),
            "rooms": body_rooms,
            "account_data": {"events": []},
            "presence": {"events": []},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
            "device_unused_fallback_key_types": [],
        }
        ctx = SyncContext(
            user_id=request.user_id,
            device_id=request.device_id,
            since=request.since,
            full_state=request.full_state,
            filter=request.filter,
            joined_rooms=[r for r in joined_ids if request.filter.allows_room(r)],
            new_rooms=new_rooms,
            body=body,
            newly_joined_users=newly_joined,
        )
        sources_changed = False
        for source in self._sources:
            source_since = None if request.since is None else getattr(request.since, source.stream)
            if await source.add_to_sync(ctx, source_since, positions[source.stream]):
                sources_changed = True
        if ctx.delivered_upto:  # a source sent a bounded batch: resume after it next time
            token = replace(token, **ctx.delivered_upto)
            body["next_batch"] = token.encode()
        for finish in self._finishers:
            await finish(ctx)
        if request.since is not None and not request.full_state:
            drop_empty_rooms(body_rooms, new_rooms)
            # Only filtered-out events: a long-poll goes on waiting.
            changed = any(body_rooms[k] for k in ("join", "leave", "invite", "knock"))
        return body, changed or sources_changed, token, listening

    def _quiet_rooms(
        self, request: SyncRequest
    ) -> tuple[int, tuple[str, ...], tuple[str, ...]] | None:
        """For an incremental sync with no room event for this user since its token:
        the token's event position, the user's joined rooms and the rooms they listen
        to (remembered from their last snapshot); None when the rooms must be read.

        The notifier publishes every *accepted* event with its room and the users whose
        membership it changed; memberships change only through accepted events, so
        when none published since the token is in the rooms the snapshot listed or
        names the user, that snapshot still holds and the rooms have nothing new (events
        in other rooms cost no read). The token keeps its own event position, so an
        event committed but not yet published is sent by the next sync (and wakes it)."""
        since = request.since
        if since is None or request.full_state:
            return None
        known = self._joined.get(request.user_id)
        if known is None:
            return None
        snapshot_upto, joined_ids, listening = known
        if since.events > snapshot_upto or self.notifier.changed_since(
            request.user_id, listening, {EVENTS: since.events}
        ):
            return None
        return since.events, joined_ids, listening

    async def _room_part(
        self, request: SyncRequest
    ) -> tuple[int, tuple[str, ...], tuple[str, ...], dict[str, object], set[str], set[str]]:
        """The ``rooms`` section read from the database: (event position reached, joined
        room IDs, rooms listened to, the section, rooms sent from scratch, other users
        who newly joined)."""
        since = request.since.events if request.since else None
        syncer = RoomSyncer(
            self.store,
            self.reader,
            request.user_id,
            request.filter,
            await self.ignored_users(request.user_id),
        )
        syncer.use_state_after = request.use_state_after
        syncer.incremental = since is not None and not request.full_state
        found = await self.store.db.read(
            read_changes,
            request.user_id,
            request.device_id,
            since,
            request.filter.timeline_limit,
            syncer.conditions(),
        )
        snap = found.snapshot
        joined_ids = tuple(m.room_id for m in snap.memberships if m.membership == "join")
        listening = tuple(
            m.room_id for m in snap.memberships if m.membership in ("join", "invite", "knock")
        )
        known = self._joined.get(request.user_id)
        if known is None or known[0] <= snap.upto:  # a slower concurrent read is older
            self._joined.set(request.user_id, (snap.upto, joined_ids, listening))
        if since is not None and since > snap.upto:
            since = snap.upto  # a token from before a restore: start over from here
        if request.filter.state.lazy_load_members:
            syncer.sent_members = self.sent_members.request(
                request.user_id, request.device_id, since, snap.upto, reset=request.full_state
            )
        rooms, new_rooms = await self._rooms(request, syncer, snap, since, found.timelines)
        now_ms = int(time.time() * 1000)
        timeline_ids = [
            ev.event_id
            for kind in ("join", "leave")
            for section in rooms[kind].values()
            if isinstance(section, RoomSection)
            for ev in section.timeline
        ]
        txn_ids = found.txn_ids
        looked_up = {eid for ids, _ in found.timelines.values() for eid in ids}
        unread = [eid for eid in timeline_ids if eid not in looked_up]
        if unread:  # timelines not prefetched (new rooms, left rooms): their own lookup
            txn_ids = {
                **txn_ids,
                **await self.store.db.read(
                    txn_store.transaction_ids_for, request.user_id, request.device_id, unread
                ),
            }
        bundles = await sync_bundles(
            self.store, self.reader, request.user_id, rooms, syncer.ignored
        )
        summary_rooms = _rooms_needing_summary(rooms["join"], new_rooms)
        summaries = (
            await self.store.db.read(stream_store.room_summaries, summary_rooms, request.user_id)
            if summary_rooms
            else {}
        )
        if request.filter.state.lazy_load_members:
            await add_hero_members(syncer, rooms["join"], summaries)
        body_rooms: dict[str, object] = {}
        for kind in ("join", "leave"):
            out = {}
            for room_id, section in rooms[kind].items():
                assert isinstance(section, RoomSection)
                entry = serialise_section(
                    section, now_ms, txn_ids, event_format=request.filter.event_format
                )
                add_sync_bundles(entry, bundles, now_ms)
                entry["account_data"] = {"events": []}
                if kind == "join":
                    entry["ephemeral"] = {"events": []}
                    if room_id in summaries:
                        entry["summary"] = summaries[room_id]
                out[room_id] = entry
            body_rooms[kind] = out
        body_rooms["invite"] = rooms["invite"]
        body_rooms["knock"] = rooms["knock"]
        newly_joined = (
            newly_joined_users(rooms["join"], request.user_id) if since is not None else set()
        )
        return snap.upto, joined_ids, listening, body_rooms, new_rooms, newly_joined

    async def _rooms(
        self,
        request: SyncRequest,
        syncer: RoomSyncer,
        snap: SyncSnapshot,
        since: int | None,
        prefetched: Mapping[str, Timeline],
    ) -> tuple[dict[str, dict[str, object]], set[str]]:
        flt = request.filter
        new_rooms: set[str] = set()
        first_change: dict[str, Membership] = {}
        left_in_window: set[str] = set()
        joined_in_window: set[str] = set()
        for change in snap.changes:
            first_change.setdefault(change.room_id, change)
            (joined_in_window if change.membership == "join" else left_in_window).add(
                change.room_id
            )
        join: dict[str, object] = {}
        invite: dict[str, object] = {}
        leave: dict[str, object] = {}
        knock: dict[str, object] = {}
        joined: list[tuple[str, int | None]] = []
        for m in snap.memberships:
            if not flt.allows_room(m.room_id):
                continue
            changed_here = m.room_id in first_change
            if m.membership == "join":
                # Joined now after a leave (or any other non-join) in the window, or
                # joined in the window: sent from scratch, full state at the start of its
                # timeline (as Synapse: a rejoin counts as newly joined).
                newly = since is None or (
                    changed_here
                    and (
                        m.room_id in left_in_window
                        or await self._was_not_joined(first_change[m.room_id])
                    )
                )
                if newly or request.full_state:
                    new_rooms.add(m.room_id)
                if newly or request.full_state or m.room_id in snap.rooms_with_events:
                    joined.append((m.room_id, None if newly else since))
            elif m.membership in ("invite", "knock"):
                if m.membership == "invite" and await syncer.invited_by_ignored(m.event_id):
                    continue
                if since is None or m.stream_ordering > since:
                    if m.out_of_band:
                        state = await syncer.out_of_band_state(m.room_id, m.event_id)
                    else:
                        state = await syncer.stripped_room_state(m.room_id, m.event_id)
                    if m.membership == "invite":
                        invite[m.room_id] = {"invite_state": {"events": state}}
                    else:
                        knock[m.room_id] = {"knock_state": {"events": state}}
            elif m.membership in ("leave", "ban"):
                left_now = since is not None and changed_here
                if m.out_of_band:
                    if left_now or (since is None and flt.include_leave):
                        leave[m.room_id] = await syncer.out_of_band_left(m.event_id, snap.upto)
                elif left_now or (since is None and flt.include_leave):
                    # Joined (or invited) and left within the window: the room is new to
                    # the client, so it comes with its full state (as Synapse does).
                    from_scratch = not left_now or (
                        m.room_id in joined_in_window
                        and await self._was_not_joined(first_change[m.room_id])
                    )
                    leave[m.room_id] = await syncer.left_room(
                        m.room_id, None if from_scratch else since, m.stream_ordering
                    )
        syncer.joined_throughout = (
            frozenset(room_id for room_id, room_since in joined if room_since is not None)
            - first_change.keys()
        )
        join.update(
            await syncer.joined_rooms(
                joined, snap.upto, full_state=request.full_state, prefetched=prefetched
            )
        )
        return {"join": join, "invite": invite, "leave": leave, "knock": knock}, new_rooms

    async def _was_not_joined(self, change: Membership) -> bool:
        """Whether the user was not joined just before this membership change."""
        ev = await self.store.get_event(change.event_id)
        if ev is None:
            return True
        state = await self.store.group_state(ev.state_before)
        prev_id = state.get(("m.room.member", str(ev.pdu.get("state_key"))))
        if prev_id is None:
            return True
        prev = await self.store.get_event(prev_id)
        content = prev.pdu.get("content") if prev else None
        return not (isinstance(content, Mapping) and content.get("membership") == "join")
