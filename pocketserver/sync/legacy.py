"""The deprecated sync API that tools and test suites still call: ``GET /events``,
``GET /initialSync``, ``GET /rooms/{roomId}/initialSync`` and ``GET /events/{eventId}``.

Spec: client-server API, data/api/client-server/old_sync.yaml, room_initial_sync.yaml,
peeking_events.yaml and "Room Previews" (modules/room_previews.md). Built on the /sync
machinery, not beside it:

- tokens are :class:`SyncToken`: the ``end`` of ``/initialSync`` (and a room's
  ``messages.end``) feeds ``/events``' ``from``, and ``/messages`` takes them too;
- room history comes from :class:`History` (access rules, visibility, ignored users);
- presence, typing, receipts and account data come from the /sync sources, whose
  sections are flattened into events carrying their ``room_id``;
- ``/events`` long-polls on the notifier: an idle request is one sleeping task.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

import trio

from pocketserver.core.event_filter import EventFilter, SyncFilter
from pocketserver.ephemeral.presence import PresenceService
from pocketserver.errors import MatrixError, not_found
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.client_events import client_event
from pocketserver.rooms.directory import Directory
from pocketserver.rooms.history import Access, History, Position, parse_position, room_access
from pocketserver.rooms.reading import ReadEvent
from pocketserver.rooms.visibility import filter_visible
from pocketserver.storage import event_stream
from pocketserver.storage import history as history_store
from pocketserver.storage import stream as stream_store
from pocketserver.storage import transactions as txn_store
from pocketserver.streams.notifier import Notifier
from pocketserver.streams.token import SyncToken
from pocketserver.sync.sources import SyncContext, SyncSource

MAX_TIMEOUT_MS = 5 * 60 * 1000
DEFAULT_EVENTS_LIMIT = 100
MAX_EVENTS_LIMIT = 1000
DEFAULT_MESSAGES_LIMIT = 10
MAX_MESSAGES_LIMIT = 100
INITIAL_SYNCS_AT_ONCE = 2
"""A global ``/initialSync`` holds every room's state at once, like an initial /sync."""

IgnoredUsers = Callable[[str], Awaitable[frozenset[str]]]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _empty_body() -> dict[str, object]:
    return {
        "rooms": {"join": {}, "leave": {}, "invite": {}, "knock": {}},
        "account_data": {"events": []},
        "presence": {"events": []},
    }


def _events_of(section: object) -> list[dict[str, object]]:
    events = section.get("events") if isinstance(section, Mapping) else None
    return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []


_V1_TOP_LEVEL = ("age", "redacted_because", "prev_content", "replaces_state")


def legacy_event(
    event: ReadEvent, now_ms: int, *, transaction_id: str | None = None
) -> dict[str, object]:
    """A ClientEvent in the form the deprecated API has always used (Synapse's "client
    v1" format, which SyTest checks): ``user_id`` beside ``sender``, and ``age``,
    ``redacted_because``, ``prev_content`` also at the top level."""
    out = client_event(event, now_ms, transaction_id=transaction_id)
    out["user_id"] = out.get("sender")
    unsigned = out.get("unsigned")
    if isinstance(unsigned, dict):
        out.update({k: unsigned[k] for k in _V1_TOP_LEVEL if k in unsigned})
    return out


def legacy_presence(event: Mapping[str, object]) -> dict[str, object]:
    """An ``m.presence`` event as the deprecated API shows it: ``content.user_id`` too."""
    content = event.get("content")
    return {
        **event,
        "content": {
            **(content if isinstance(content, Mapping) else {}),
            "user_id": event.get("sender"),
        },
    }


def flatten(body: Mapping[str, object]) -> list[dict[str, object]]:
    """The non-room parts of a sync body as a list of events: presence, global account
    data, and each joined room's ephemeral events and account data with their ``room_id``."""
    out = [legacy_presence(e) for e in _events_of(body.get("presence"))]
    out += _events_of(body.get("account_data"))
    rooms = body.get("rooms")
    joined = rooms.get("join") if isinstance(rooms, Mapping) else None
    for room_id, entry in (joined or {}).items():
        if not isinstance(entry, Mapping):
            continue
        for section in ("ephemeral", "account_data"):
            out += [{**e, "room_id": room_id} for e in _events_of(entry.get(section))]
    return out


class LegacySync:
    """The deprecated endpoints, for one server."""

    def __init__(
        self,
        client: RoomClient,
        notifier: Notifier,
        directory: Directory,
        presence: PresenceService,
        sources: Sequence[SyncSource],
        ignored_users: IgnoredUsers,
    ) -> None:
        self.client = client
        self.store = client.store
        self.reader = client.reader
        self.history = History(client)
        self.notifier = notifier
        self.directory = directory
        self.presence = presence
        self.sources = list(sources)
        """Account data, receipts, typing, presence: the streams the old API carries
        (never to-device messages or device lists, which only /sync acknowledges)."""
        self.ignored_users = ignored_users
        self._initial_syncs = trio.CapacityLimiter(INITIAL_SYNCS_AT_ONCE)

    # --- tokens ----------------------------------------------------------------------

    def now(self) -> SyncToken:
        """A token for now: every event and stream item committed so far is before it."""
        positions = {s.stream: s.position() for s in self.sources}
        return replace(SyncToken(events=self.notifier.position), **positions)

    def parse_token(self, text: str) -> SyncToken:
        """A ``from`` token: a sync token, or a ``t<N>`` history token (the boundary
        before event position N, other streams from now).

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` if it is neither.
        """
        if text.startswith("t"):
            try:
                stream = parse_position(text)
            except MatrixError:
                raise MatrixError(400, "M_INVALID_PARAM", "invalid from token") from None
            return replace(self.now(), events=max(stream - 1, 0))
        return SyncToken.parse(text)

    # --- GET /events -----------------------------------------------------------------

    async def events(
        self,
        user_id: str,
        device_id: str,
        *,
        since: SyncToken | None,
        timeout_ms: int,
        limit: int,
        room_id: str | None = None,
        is_guest: bool = False,
    ) -> dict[str, object]:
        """``GET /events``: what happened since ``since`` (now, if None), waiting up to
        ``timeout_ms`` for something. With ``room_id``, only that room, which a user
        not joined to it may read if it is world-readable (peeking).

        Raises:
            MatrixError: 400 for a guest without ``room_id``; 403 ``M_FORBIDDEN`` for a
                room the user may not peek into.
        """
        if room_id is None and is_guest:
            raise MatrixError(400, "M_MISSING_PARAM", "guests must give a room_id")
        # With a room: members (and former members, up to their leave) read it as
        # members; anyone else only if it is world-readable (Room Previews).
        access = None if room_id is None else await room_access(self.client, user_id, room_id)
        start = since or self.now()
        token = start
        limit = max(1, min(limit, MAX_EVENTS_LIMIT))
        deadline = trio.current_time() + min(timeout_ms, MAX_TIMEOUT_MS) / 1000
        while True:
            positions = {s.stream: s.position() for s in self.sources}
            upto = self.notifier.position
            if room_id is not None and access is not None:
                chunk, reached, rooms = await self._room_stream(
                    user_id, room_id, access, token.events, upto, limit
                )
            else:
                chunk, reached, rooms = await self._user_stream(
                    user_id, device_id, token.events, upto, limit
                )
            peeking = access is not None and not access.member
            chunk += await self._stream_items(
                user_id,
                device_id,
                token,
                positions,
                rooms,
                streams=_PEEK_STREAMS if peeking else None,
            )
            if peeking and room_id is not None:
                chunk += await self._peeked_presence(room_id, token.presence, positions)
            token = replace(token, events=reached, **positions)
            remaining = deadline - trio.current_time()
            if chunk or remaining <= 0:
                return {"start": start.encode(), "end": token.encode(), "chunk": chunk}
            if reached < upto:
                continue  # everything read was hidden: read on from there
            # Woken only by changes to these rooms or naming the user.
            await self.notifier.wait_for_change(
                token.events,
                {s.stream: getattr(token, s.stream) for s in self.sources},
                remaining,
                user_id=user_id,
                rooms=rooms,
            )

    async def _user_stream(
        self, user_id: str, device_id: str, after: int, upto: int, limit: int
    ) -> tuple[list[dict[str, object]], int, list[str]]:
        """Events of the user's joined rooms and their own membership changes elsewhere
        in ``(after, upto]``: (events, position reached, joined rooms)."""
        if after >= upto:
            joined = await self.client.joined_rooms(user_id)
            return [], max(after, upto), joined
        found = await self.store.db.read(event_stream.user_stream, user_id, after, upto, limit)
        reached = found.rows[-1][2] if len(found.rows) >= limit else upto
        read = await self.reader.get_events(eid for eid, _, _ in found.rows)
        events = [read[eid] for eid, _, _ in found.rows if eid in read]
        # Members see every event of the time they are joined, as in /sync.
        visible = await filter_visible(self.store, user_id, events, joined_now=True)
        ignored = await self.ignored_users(user_id)
        visible = [
            ev for ev in visible if "state_key" in ev.pdu or ev.pdu.get("sender") not in ignored
        ]
        txn_ids = await self.store.db.read(
            txn_store.transaction_ids_for, user_id, device_id, [ev.event_id for ev in visible]
        )
        now = _now_ms()
        chunk = [legacy_event(ev, now, transaction_id=txn_ids.get(ev.event_id)) for ev in visible]
        return chunk, reached, sorted(found.joined)

    async def _room_stream(
        self, user_id: str, room_id: str, access: Access, after: int, upto: int, limit: int
    ) -> tuple[list[dict[str, object]], int, list[str]]:
        """Events of one room in ``(after, upto]`` as :class:`History` shows them."""
        if after >= upto:
            return [], max(after, upto), [room_id]
        page = await self.history.paginate(
            user_id,
            room_id,
            access,
            start=Position(None, after + 1),
            bound=Position(None, upto + 1),
            forwards=True,
            limit=limit,
            flt=EventFilter(),
            ignored=await self.ignored_users(user_id),
        )
        reached = page.position.stream - 1 if page.more else upto
        now = _now_ms()
        return [legacy_event(ev, now) for ev in page.events], reached, [room_id]

    async def _peeked_presence(
        self, room_id: str, since: int, positions: Mapping[str, int]
    ) -> list[dict[str, object]]:
        """Presence changes of the members of a room a user peeks into (whose presence
        the presence source, which follows shared rooms, would not send them)."""
        upto = positions.get(self.presence.stream, since)
        changed = self.presence.changed_between(since, upto) if since < upto else set()
        if not self.presence.enabled or not changed:
            await trio.lowlevel.checkpoint()
            return []
        members = await self.store.db.read(event_stream.joined_members, room_id)
        return self._presence_of([m for m in members if m in changed])

    def _presence_of(self, user_ids: Sequence[str]) -> list[dict[str, object]]:
        return [
            legacy_presence(
                {"type": "m.presence", "sender": u, "content": self.presence.get(u).to_json()}
            )
            for u in user_ids
        ]

    async def _stream_items(
        self,
        user_id: str,
        device_id: str,
        since: SyncToken | None,
        positions: Mapping[str, int],
        rooms: list[str],
        *,
        whole_rooms: frozenset[str] = frozenset(),
        streams: frozenset[str] | None = None,
    ) -> list[dict[str, object]]:
        """What the /sync sources add for ``rooms`` in ``(since, positions]``, as events."""
        ctx = SyncContext(
            user_id=user_id,
            device_id=device_id,
            since=since,
            full_state=False,
            filter=SyncFilter(),
            joined_rooms=rooms,
            new_rooms=set(whole_rooms),
            body=_empty_body(),
        )
        for source in self.sources:
            if streams is not None and source.stream not in streams:
                continue
            source_since = None if since is None else getattr(since, source.stream)
            await source.add_to_sync(ctx, source_since, positions[source.stream])
        return flatten(ctx.body)

    # --- GET /events/{eventId} ---------------------------------------------------------

    async def event(self, user_id: str, event_id: str) -> dict[str, object]:
        """``GET /events/{eventId}``: the event, if the user may see it.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` if it is unknown or hidden from the user.
        """
        stored = await self.store.get_event(event_id)
        if stored is None or stored.outlier:
            raise not_found("event not found")
        try:
            access = await room_access(self.client, user_id, stored.room_id)
        except MatrixError:
            raise not_found("event not found") from None
        event = await self.history.visible_event(user_id, stored.room_id, event_id, access)
        return legacy_event(event, _now_ms())

    # --- GET /rooms/{roomId}/initialSync -----------------------------------------------

    async def room_initial_sync(
        self, user_id: str, device_id: str, room_id: str, limit: int
    ) -> dict[str, object]:
        """A snapshot of one room: its state and latest messages now (or when the user
        left), the members' presence and the room's receipts and account data.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if the user is not (and never was) in the
                room and it is not world-readable.
        """
        access = await room_access(self.client, user_id, room_id)
        membership, member_event_id = await self.client.membership_of(room_id, user_id)
        now_token = self.now()
        parted = access.upto is not None
        end = (
            now_token if access.upto is None else replace(now_token, events=access.upto.stream - 1)
        )
        result = await self._room_snapshot(user_id, room_id, access, member_event_id, limit, end)
        if access.member and membership is not None:
            result["membership"] = membership
        whole = frozenset((room_id,))
        items = await self._stream_items(
            user_id,
            device_id,
            None,
            {s.stream: s.position() for s in self.sources},
            [room_id],
            whole_rooms=whole,
            streams=frozenset(("account_data", "receipts")),
        )
        result["account_data"] = [
            _without_room(e) for e in items if e.get("room_id") == room_id and _is_account_data(e)
        ]
        result["receipts"] = [] if parted else [e for e in items if e.get("type") == "m.receipt"]
        result["presence"] = [] if parted else await self._members_presence(room_id)
        return result

    async def _room_snapshot(
        self,
        user_id: str,
        room_id: str,
        access: Access,
        member_event_id: str | None,
        limit: int,
        end: SyncToken,
    ) -> dict[str, object]:
        """``room_id``, ``messages`` and ``state``: now, or at the user's leave for a
        former member; ``end`` is the token ``messages`` ends at."""
        if access.upto is not None and member_event_id is not None:
            left = await self.store.get_event(member_event_id)
            state_ids = await self.store.group_state(left.state_after if left else None)
        else:
            state_ids = await self.store.current_state_ids(room_id)
        start = Position(None, await self.store.db.read(history_store.next_position))
        page = await self.history.paginate(
            user_id,
            room_id,
            access,
            start=start,
            bound=None,
            forwards=False,
            limit=min(limit, MAX_MESSAGES_LIMIT),
            flt=EventFilter(),
            ignored=await self.ignored_users(user_id),
        )
        now = _now_ms()
        state = await self.reader.get_events(state_ids.values())
        return {
            "room_id": room_id,
            "messages": {
                "chunk": [legacy_event(ev, now) for ev in reversed(page.events)],
                "start": page.position.encode(),
                "end": end.encode(),
            },
            "state": [legacy_event(state[i], now) for i in state_ids.values() if i in state],
        }

    async def _members_presence(self, room_id: str) -> list[dict[str, object]]:
        if not self.presence.enabled:
            await trio.lowlevel.checkpoint()
            return []
        return self._presence_of(await self.store.db.read(event_stream.joined_members, room_id))

    # --- GET /initialSync ----------------------------------------------------------------

    async def initial_sync(
        self, user_id: str, device_id: str, *, limit: int, archived: bool
    ) -> dict[str, object]:
        """``GET /initialSync``: every room the user is joined or invited to (and, with
        ``archived``, has left), with state and the latest ``limit`` messages each,
        presence, account data and receipts; ``end`` is a token for ``/events``."""
        async with self._initial_syncs:
            return await self._initial_sync(user_id, device_id, limit=limit, archived=archived)

    async def _initial_sync(
        self, user_id: str, device_id: str, *, limit: int, archived: bool
    ) -> dict[str, object]:
        now_token = self.now()
        positions = {s.stream: getattr(now_token, s.stream) for s in self.sources}
        memberships = await self.store.db.read(stream_store.current_memberships, user_id)
        wanted = ("join", "invite", "leave", "ban") if archived else ("join", "invite")
        joined = sorted(m.room_id for m in memberships if m.membership == "join")
        items = await self._stream_items(
            user_id,
            device_id,
            None,
            positions,
            joined,
            whole_rooms=frozenset(joined),
            streams=frozenset(("account_data", "receipts", "presence")),
        )
        room_data: dict[str, list[dict[str, object]]] = {}
        for item in items:
            room = item.get("room_id")
            if isinstance(room, str) and _is_account_data(item):
                room_data.setdefault(room, []).append(_without_room(item))
        now = _now_ms()
        rooms: list[dict[str, object]] = []
        for m in sorted(memberships, key=lambda m: m.stream_ordering):
            if m.membership not in wanted:
                continue
            entry: dict[str, object] = {
                "room_id": m.room_id,
                "membership": m.membership,
                "visibility": "public" if await self.directory.is_public(m.room_id) else "private",
            }
            if m.membership == "invite":
                invite = (await self.reader.get_events([m.event_id])).get(m.event_id)
                if invite is not None:
                    entry["invite"] = legacy_event(invite, now)
                    entry["inviter"] = invite.pdu.get("sender")
            elif m.membership in ("join", "leave", "ban") and not m.out_of_band:
                # (An out-of-band leave, a rejected invite to a room elsewhere, has no
                # room here to show.)
                left = m.membership != "join"
                upto = Position(None, m.stream_ordering + 1) if left else None
                access = Access(member=True, upto=upto)
                end = replace(now_token, events=m.stream_ordering) if left else now_token
                entry.update(
                    await self._room_snapshot(user_id, m.room_id, access, m.event_id, limit, end)
                )
                entry["account_data"] = room_data.get(m.room_id, [])
            rooms.append(entry)
        return {
            "end": now_token.encode(),
            "rooms": rooms,
            "presence": [e for e in items if e.get("type") == "m.presence"],
            "account_data": [e for e in items if "room_id" not in e and _is_account_data(e)],
            "receipts": [e for e in items if e.get("type") == "m.receipt"],
        }


_PEEK_STREAMS = frozenset(("account_data", "receipts", "typing"))
"""A peeker gets the room's members' presence from :meth:`LegacySync._peeked_presence`."""
_NOT_ACCOUNT_DATA = frozenset(("m.presence", "m.receipt", "m.typing"))


def _is_account_data(event: Mapping[str, object]) -> bool:
    return event.get("type") not in _NOT_ACCOUNT_DATA


def _without_room(event: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in event.items() if k != "room_id"}
