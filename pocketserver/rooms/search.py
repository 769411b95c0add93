"""Server-side search over room events (client-server-api/modules/search.md).

Candidates come from the FTS5 index (rooms the user is or was in, the request's
filter), then every one passes the history visibility rules and redactions before
it is returned. A page scans a bounded number of candidates; ``next_batch`` says
where the scan stopped (``r<offset>`` for rank order, ``s<stream>`` for recent).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pocketserver.core.event_filter import EventFilter
from pocketserver.errors import MatrixError
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.client_events import client_event
from pocketserver.rooms.reading import ReadEvent
from pocketserver.rooms.visibility import filter_visible
from pocketserver.storage import search as search_store

SEARCH_KEYS = ("content.body", "content.name", "content.topic")
KEY_TYPES = {
    "content.body": "m.room.message",
    "content.name": "m.room.name",
    "content.topic": "m.room.topic",
}
DEFAULT_LIMIT = 10
MAX_LIMIT = 50
MAX_CONTEXT = 20
MAX_LEFT_ROOMS = 200
"""Rooms the user has left are searched up to their leaving: the 200 left last."""
MAX_SCANNED = 500
"""Candidates examined per request at most (visibility can hide many of them)."""

_TOKEN = re.compile(r"([rs])(-?\d{1,18})\Z")  # s: a stream position (negative: backfill)


@dataclass(frozen=True, slots=True)
class RoomEventsCriteria:
    search_term: str
    keys: tuple[str, ...] = SEARCH_KEYS
    filter: EventFilter = field(default_factory=EventFilter)
    order_by: str = "rank"
    before_limit: int | None = None  # None: no event_context requested
    after_limit: int = 5
    include_profile: bool = False
    include_state: bool = False
    group_by: tuple[str, ...] = ()


def _parse_token(token: str | None, order_by: str) -> int | None:
    if token is None:
        return None
    m = _TOKEN.match(token)
    if m is None or (m.group(1) == "r") != (order_by == "rank"):
        raise MatrixError(400, "M_INVALID_PARAM", "invalid next_batch token")
    return int(m.group(2))


def _now_ms() -> int:
    return int(time.time() * 1000)


class RoomSearch:
    def __init__(self, room_client: RoomClient) -> None:
        self.client = room_client
        self.store = room_client.store
        self.reader = room_client.reader

    async def search(
        self, user_id: str, criteria: RoomEventsCriteria, next_batch: str | None
    ) -> dict[str, object]:
        """The ``room_events`` result object for ``user_id``.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a bad ``next_batch``.
        """
        position = _parse_token(next_batch, criteria.order_by)
        flt = criteria.filter
        rooms = await self.store.db.read(search_store.rooms_ever_in, user_id)
        room_ids = tuple(r for r, upto in rooms if upto is None and flt.allows_room(r))
        left = sorted(
            ((r, upto) for r, upto in rooms if upto is not None and flt.allows_room(r)),
            key=lambda pair: -pair[1],
        )
        left_rooms = tuple(left[:MAX_LEFT_ROOMS])
        by_type = EventFilter(types=flt.types, not_types=flt.not_types)
        keys = tuple(k for k in criteria.keys if by_type.matches({"type": KEY_TYPES[k]}))
        words = search_store.query_words(criteria.search_term)
        limit = min(flt.limit or DEFAULT_LIMIT, MAX_LIMIT)
        empty: dict[str, object] = {"count": 0, "results": [], "highlights": []}
        query = search_store.SearchQuery(
            match=search_store.fts_query(words),
            keys=keys,
            room_ids=room_ids,
            left_rooms=left_rooms,
            senders=flt.senders,
            not_senders=flt.not_senders,
        )
        if not words or query.empty:
            return empty
        found, next_position = await self._page(user_id, query, criteria, position, limit)
        count = await self.store.db.read(search_store.count_matches, query)
        now = _now_ms()
        results = []
        for ev, rank in found:
            result: dict[str, object] = {"rank": rank, "result": client_event(ev, now)}
            if criteria.before_limit is not None:
                result["context"] = await self._context(user_id, ev, criteria, now)
            results.append(result)
        body: dict[str, object] = {
            "count": count,
            "results": results,
            "highlights": _highlights(words, [ev for ev, _ in found]),
        }
        if next_position is not None:
            body["next_batch"] = f"{'r' if criteria.order_by == 'rank' else 's'}{next_position}"
        if criteria.group_by:
            body["groups"] = _groups(criteria.group_by, [ev for ev, _ in found])
        if criteria.include_state:
            body["state"] = await self._room_states(user_id, [ev for ev, _ in found], now)
        return body

    async def _page(
        self,
        user_id: str,
        query: search_store.SearchQuery,
        criteria: RoomEventsCriteria,
        position: int | None,
        limit: int,
    ) -> tuple[list[tuple[ReadEvent, float]], int | None]:
        """Up to ``limit`` visible hits and the position to continue from (None: done)."""
        ranked = criteria.order_by == "rank"
        offset = position or 0
        before = position
        found: list[tuple[ReadEvent, float]] = []
        scanned = 0
        while len(found) < limit and scanned < MAX_SCANNED:
            batch = limit - len(found) + 5
            if ranked:
                hits = await self.store.db.read(search_store.search_ranked, query, offset, batch)
            else:
                hits = await self.store.db.read(search_store.search_recent, query, before, batch)
            for hit in hits:
                scanned += 1
                offset += 1
                before = hit.stream_ordering
                ev = await self._visible(user_id, hit.event_id, hit.room_id, criteria.filter)
                if ev is not None:
                    found.append((ev, hit.rank))
                if len(found) >= limit:
                    break
            if len(hits) < batch and len(found) < limit:
                return found, None  # the index has nothing more
        return found, (offset if ranked else before)

    async def _visible(
        self, user_id: str, event_id: str, room_id: str, flt: EventFilter
    ) -> ReadEvent | None:
        events = await self.reader.get_events([event_id])
        ev = events.get(event_id)
        if ev is None or ev.redacted_because is not None or not flt.matches(ev.pdu):
            return None
        membership, _ = await self.client.membership_of(room_id, user_id)
        seen = await filter_visible(self.store, user_id, [ev], joined_now=membership == "join")
        return ev if seen else None

    async def _visible_ids(
        self, user_id: str, room_id: str, event_ids: Sequence[str]
    ) -> list[ReadEvent]:
        events = await self.reader.get_events(event_ids)
        in_order = [events[i] for i in event_ids if i in events]
        membership, _ = await self.client.membership_of(room_id, user_id)
        return await filter_visible(self.store, user_id, in_order, joined_now=membership == "join")

    async def _context(
        self, user_id: str, ev: ReadEvent, criteria: RoomEventsCriteria, now: int
    ) -> dict[str, object]:
        before_n = min(criteria.before_limit or 0, MAX_CONTEXT)
        after_n = min(criteria.after_limit, MAX_CONTEXT)
        before_ids, after_ids = await self.store.db.read(
            search_store.room_events_around, ev.room_id, ev.stream_ordering, before_n, after_n
        )
        before = await self._visible_ids(user_id, ev.room_id, before_ids)
        after = await self._visible_ids(user_id, ev.room_id, after_ids)
        first = before[-1].stream_ordering if before else ev.stream_ordering
        last = after[-1].stream_ordering if after else ev.stream_ordering
        context: dict[str, object] = {
            "start": f"t{first}",
            "end": f"t{last + 1}",
            "events_before": [client_event(e, now) for e in before],
            "events_after": [client_event(e, now) for e in after],
        }
        if criteria.include_profile:
            context["profile_info"] = await self._profiles(ev, [*before, ev, *after])
        return context

    async def _profiles(
        self, ev: ReadEvent, events: Sequence[ReadEvent]
    ) -> dict[str, dict[str, object]]:
        """Each sender's member event content as it was at the result (historic)."""
        stored = await self.store.get_event(ev.event_id)
        state = await self.store.group_state(stored.state_after if stored else None)
        senders = sorted({str(e.pdu.get("sender")) for e in events})
        ids = {s: state[("m.room.member", s)] for s in senders if ("m.room.member", s) in state}
        members = await self.reader.get_events(ids.values())
        profiles: dict[str, dict[str, object]] = {}
        for sender, member_id in ids.items():
            member = members.get(member_id)
            content = member.pdu.get("content") if member else None
            if not isinstance(content, Mapping):
                continue
            profile: dict[str, object] = {}
            for key in ("displayname", "avatar_url"):
                if isinstance(content.get(key), str):
                    profile[key] = content[key]
            profiles[sender] = profile
        return profiles

    async def _room_states(
        self, user_id: str, events: Sequence[ReadEvent], now: int
    ) -> dict[str, list[dict[str, object]]]:
        states: dict[str, list[dict[str, object]]] = {}
        for room_id in dict.fromkeys(ev.room_id for ev in events):
            try:
                state = await self.client.visible_state_events(user_id, room_id)
            except MatrixError:
                continue
            states[room_id] = [client_event(e, now) for e in state]
        return states


def _highlights(words: Sequence[str], events: Sequence[ReadEvent]) -> list[str]:
    """The query words, and the words of the results they matched as prefixes."""
    found = list(words)
    for ev in events:
        content = ev.pdu.get("content")
        if not isinstance(content, Mapping):
            continue
        for value in (content.get("body"), content.get("name"), content.get("topic")):
            if not isinstance(value, str):
                continue
            for token in re.findall(r"\w+", value[:4096]):
                lowered = token.lower()
                if lowered not in found and any(lowered.startswith(w) for w in words):
                    found.append(lowered)
                    if len(found) >= 50:
                        return found
    return found


def _groups(group_by: Sequence[str], events: Sequence[ReadEvent]) -> dict[str, object]:
    groups: dict[str, object] = {}
    for key in group_by:
        by_value: dict[str, dict[str, object]] = {}
        for ev in events:
            value = ev.room_id if key == "room_id" else str(ev.pdu.get("sender"))
            entry = by_value.setdefault(value, {"order": len(by_value) + 1, "results": []})
            results = entry["results"]
            assert isinstance(results, list)
            results.append(ev.event_id)
        groups[key] = by_value
    return groups
