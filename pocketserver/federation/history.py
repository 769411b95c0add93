"""What other servers may read of our rooms: events, state, auth chains and history.

The service behind the read side of server-server-api.md: ``GET /event/{eventId}``,
``GET /state/{roomId}``, ``GET /state_ids/{roomId}``, ``GET /event_auth/{roomId}/
{eventId}``, ``GET /backfill/{roomId}``, ``POST /get_missing_events/{roomId}`` and
``GET /timestamp_to_event/{roomId}``. Every method takes the *authenticated* origin of
the request (X-Matrix) and decides what that server may see:

- **Server ACLs** (server-server-api.md "Server Access Control Lists (ACLs)"): a denied
  server gets 403 ``M_FORBIDDEN`` on every room-scoped endpoint here.
- **Being in the room**: ``/state``, ``/state_ids``, ``/event_auth``, ``/event``,
  ``/backfill`` and ``/get_missing_events`` are answered only to a server with a user
  joined to the room now (403 otherwise), as Synapse does (``assert_host_in_room``);
  the spec leaves it to history visibility, and a server that has left has no claim on
  the room's state.
- **History visibility for servers** (client-server-api "Room History Visibility",
  "Server behaviour", applied per user of the server; ``core.visibility``): an event
  the server may not see, or one whose sender was erased at deactivation, is sent
  *redacted* rather than left out, so the DAG the peer holds has no holes. This is
  Synapse's ``filter_events_for_server(redact=True, filter_out_erased_senders=True)``.
- **Redactions** applied by this server are applied to what we serve (the redacted
  form is what every server converges on).

Limits: ``/backfill`` serves at most :data:`MAX_BACKFILL` events and
``/get_missing_events`` at most :data:`MAX_MISSING_EVENTS`, as Synapse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pocketserver.core.locality import server_of
from pocketserver.core.redaction import redact
from pocketserver.core.server_acl import server_acl_from_content
from pocketserver.core.visibility import (
    SHARED,
    WORLD_READABLE,
    ServerVisibilityContext,
    effective_history_visibility,
    is_event_visible_to_server,
)
from pocketserver.errors import MatrixError, forbidden, not_found
from pocketserver.rooms.reading import EventReader, ReadEvent
from pocketserver.rooms.store import RoomStore, StateKey
from pocketserver.storage import dag, deactivation, discovery
from pocketserver.storage.events import StoredEvent

MAX_BACKFILL = 100
"""Events served by one ``/backfill`` (Synapse caps it at 100 too)."""
MAX_MISSING_EVENTS = 20
"""Events served by one ``/get_missing_events`` (the spec's default is 10; Synapse
serves at most 20)."""
STATE_BATCH = 200
"""Events read at a time while streaming a room's state or auth chain."""
TS_CANDIDATES = 20
"""Events looked at around a timestamp before giving up on finding a visible one."""

_ACL_KEY: StateKey = ("m.room.server_acl", "")
_HV_KEY: StateKey = ("m.room.history_visibility", "")
_LOCAL_ONLY_UNSIGNED = ("transaction_id", "redacted_because", "membership", "m.relations")
"""``unsigned`` keys that describe the event to one of our clients, never to servers."""


def _content(pdu: Mapping[str, object]) -> Mapping[str, object]:
    content = pdu.get("content")
    return content if isinstance(content, Mapping) else {}


def server_pdu(pdu: Mapping[str, object]) -> dict[str, object]:
    """The PDU as we send it to another server: as signed (the stored form, redacted
    if a redaction applies), without ``unsigned`` keys meant for our own clients."""
    out = dict(pdu)
    unsigned = out.get("unsigned")
    if isinstance(unsigned, Mapping):
        kept = {k: v for k, v in unsigned.items() if k not in _LOCAL_ONLY_UNSIGNED}
        if kept:
            out["unsigned"] = kept
        else:
            del out["unsigned"]
    return out


@dataclass(frozen=True, slots=True)
class StateAnswer:
    """``/state_ids``: the state before an event and the auth chain of that state."""

    pdu_ids: list[str]
    auth_chain_ids: list[str]


class FederationHistory:
    """Answers other servers' reads of our rooms (see the module docstring)."""

    def __init__(self, store: RoomStore, reader: EventReader) -> None:
        self.store = store
        self.reader = reader

    # --- who may ask --------------------------------------------------------------------

    async def check_acl(self, origin: str, room_id: str) -> None:
        """403 ``M_FORBIDDEN`` if the room's server ACL denies ``origin``."""
        state = await self.store.current_state_ids(room_id)
        acl_id = state.get(_ACL_KEY)
        if acl_id is None:
            return
        acl_event = await self.store.get_event(acl_id)
        acl = server_acl_from_content(_content(acl_event.pdu) if acl_event else None)
        if acl is not None and not acl.allows(origin):
            raise forbidden("Server is banned from room")

    async def require_host_in_room(self, origin: str, room_id: str) -> None:
        """The room exists here, the ACL lets ``origin`` in, and one of its users is
        joined now; 404 or 403 otherwise."""
        if await self.store.room_version(room_id) is None:
            raise not_found("Room not found")
        await self.check_acl(origin, room_id)
        if not await self.store.db.read(dag.host_in_room, room_id, origin):
            raise forbidden("Host not in room.")

    # --- single events -----------------------------------------------------------------

    async def event(self, origin: str, event_id: str) -> dict[str, object]:
        """``GET /event/{eventId}``: the PDU, redacted if ``origin`` may not see it."""
        stored = await self.store.get_event(event_id)
        if stored is None or stored.rejected is not None:
            raise not_found("Event not found")
        await self.require_host_in_room(origin, stored.room_id)
        pdus = await self._for_server(origin, [event_id])
        if not pdus:
            raise not_found("Event not found")
        return pdus[0]

    # --- state ---------------------------------------------------------------------------

    async def _event_in_room(self, room_id: str, event_id: str) -> StoredEvent:
        stored = await self.store.get_event(event_id)
        if stored is None or stored.room_id != room_id or stored.rejected is not None:
            raise not_found("Event not found in room")
        if stored.outlier or stored.state_before is None:
            raise MatrixError(404, "M_NOT_FOUND", "No state is known at this event")
        return stored

    async def state_ids(self, origin: str, room_id: str, event_id: str) -> StateAnswer:
        """``GET /state_ids/{roomId}?event_id=``: the state *before* the event (the
        spec's "state at the event"; Synapse computes the same from the state after),
        and the full auth chain of those state events."""
        await self.require_host_in_room(origin, room_id)
        stored = await self._event_in_room(room_id, event_id)
        state = await self.store.group_state(stored.state_before)
        pdu_ids = sorted(state.values())
        chain = await self.store.auth_chain_ids(pdu_ids)
        return StateAnswer(pdu_ids, sorted(chain - set(pdu_ids)))

    async def state_pdus(
        self, origin: str, room_id: str, event_id: str
    ) -> tuple[list[str], list[str]]:
        """``GET /state/{roomId}``: check access and return the IDs to stream as
        ``pdus`` and ``auth_chain`` (read with :meth:`pdus_of`, a batch at a time, so a
        big room's state is never held whole)."""
        answer = await self.state_ids(origin, room_id, event_id)
        return answer.pdu_ids, answer.auth_chain_ids

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> list[str]:
        """``GET /event_auth/{roomId}/{eventId}``: the IDs of the event's full auth
        chain (the event itself excluded), to stream with :meth:`pdus_of`."""
        await self.require_host_in_room(origin, room_id)
        stored = await self.store.get_event(event_id)
        if stored is None or stored.room_id != room_id:
            raise not_found("Event not found in room")
        return sorted(await self.store.auth_chain_ids([event_id]))

    async def pdus_of(self, event_ids: Sequence[str]) -> AsyncIterator[dict[str, object]]:
        """The PDUs of ``event_ids`` in order, read :data:`STATE_BATCH` at a time
        (redactions applied); unknown IDs are skipped."""
        for i in range(0, len(event_ids), STATE_BATCH):
            chunk = event_ids[i : i + STATE_BATCH]
            found = await self.reader.get_events(chunk)
            for event_id in chunk:
                ev = found.get(event_id)
                if ev is not None:
                    yield server_pdu(ev.pdu)

    # --- history -------------------------------------------------------------------------

    async def backfill(
        self, origin: str, room_id: str, seeds: Iterable[str], limit: int
    ) -> list[dict[str, object]]:
        """``GET /backfill/{roomId}?v=...&limit=``: up to ``limit`` (at most
        :data:`MAX_BACKFILL`) events from ``seeds`` back, newest first."""
        await self.require_host_in_room(origin, room_id)
        ids = await self.store.db.read(
            dag.backfill_ids, room_id, list(seeds), max(0, min(limit, MAX_BACKFILL))
        )
        return await self._for_server(origin, ids)

    async def missing_events(
        self,
        origin: str,
        room_id: str,
        earliest: Sequence[str],
        latest: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> list[dict[str, object]]:
        """``POST /get_missing_events/{roomId}``: the events between ``earliest`` and
        ``latest``, oldest first, at most :data:`MAX_MISSING_EVENTS`."""
        await self.require_host_in_room(origin, room_id)
        ids = await self.store.db.read(
            dag.missing_event_ids,
            room_id,
            list(earliest),
            list(latest),
            max(0, min(limit, MAX_MISSING_EVENTS)),
            min_depth,
        )
        return await self._for_server(origin, ids)

    async def timestamp_to_event(
        self, origin: str, room_id: str, ts: int, forwards: bool
    ) -> tuple[str, int]:
        """``GET /timestamp_to_event/{roomId}``: the closest event at or after (``f``)
        or at or before (``b``) ``ts`` that ``origin`` may see unredacted."""
        await self.check_acl(origin, room_id)
        if await self.store.room_version(room_id) is None:
            raise not_found("Room not found")
        candidates = await self.store.db.read(
            discovery.events_near_ts, room_id, ts, forwards, TS_CANDIDATES
        )
        visible = await self._visible_ids(origin, [eid for eid, _ in candidates])
        for event_id, event_ts in candidates:
            if event_id in visible:
                return event_id, event_ts
        raise not_found(f"no event found from {ts} {'forwards' if forwards else 'backwards'}")

    # --- visibility ----------------------------------------------------------------------

    async def _for_server(self, origin: str, event_ids: Sequence[str]) -> list[dict[str, object]]:
        """The events in order, each redacted unless ``origin`` may see it."""
        found = await self.reader.get_events(event_ids)
        events = [found[eid] for eid in event_ids if eid in found]
        visible = await self._visible_ids(origin, [ev.event_id for ev in events])
        return [server_pdu(ev.pdu if ev.event_id in visible else self._pruned(ev)) for ev in events]

    @staticmethod
    def _pruned(ev: ReadEvent) -> dict[str, object]:
        return redact(ev.pdu, ev.room_version)

    async def _visible_ids(self, origin: str, event_ids: Sequence[str]) -> set[str]:
        stored = await self.store.get_events(event_ids)
        senders = {str(s.pdu.get("sender")) for s in stored.values()}
        erased = await self.store.db.read(deactivation.erased_among, senders) if senders else set()
        visible: set[str] = set()
        for event_id in event_ids:
            ev = stored.get(event_id)
            if ev is None or ev.pdu.get("sender") in erased:
                continue
            if ev.outlier or ev.state_after is None:
                # No state known at an outlier: Synapse treats it as visible too.
                visible.add(event_id)
                continue
            if await self._visible(ev, origin):
                visible.add(event_id)
        return visible

    async def _visible(self, ev: StoredEvent, origin: str) -> bool:
        state = await self.store.group_state(ev.state_after)
        hv_id = state.get(_HV_KEY)
        hv_event = await self.store.get_event(hv_id) if hv_id else None
        raw = _content(hv_event.pdu).get("history_visibility") if hv_event else None
        hv = raw if isinstance(raw, str) else None
        if effective_history_visibility(hv) in (SHARED, WORLD_READABLE):
            return True  # no need to look at the server's memberships
        member_ids = [
            event_id
            for (kind, key), event_id in state.items()
            if kind == "m.room.member" and server_of(key) == origin
        ]
        members = await self.store.get_events(member_ids)
        memberships = [
            (str(m.pdu.get("state_key")), str(_content(m.pdu).get("membership")))
            for m in members.values()
        ]
        return is_event_visible_to_server(
            origin, ServerVisibilityContext(history_visibility=hv, memberships=memberships)
        )
