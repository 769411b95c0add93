"""Out-of-band memberships: our users' invites, knocks and their withdrawals in rooms
this server does not hold.

server-server-api.md "Inviting to a room": an invite for one of our users to a room
we are not in reaches us alone (``PUT /v2/invite``), with the room's stripped state
(``invite_room_state``). There is no room here to put it in, so (as Synapse's
out-of-band membership events) the invite is stored as an outlier with its stripped
state and becomes the user's membership in that room: /sync shows it in
``rooms.invite``, the user's waiting /sync is woken, push rules see it
(``.m.rule.invite_for_me``). A rejection, a knock on a room elsewhere and its
withdrawal are stored the same way. A later join through the room itself (the
room's own member events) is newer and replaces it (storage/stream.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial

from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import EventKind, PersistedEvent
from pocketserver.storage import out_of_band as oob_store
from pocketserver.storage.out_of_band import OutOfBandMembership
from pocketserver.streams.notifier import Notifier

log = logging.getLogger(__name__)

MAX_STRIPPED_STATE = 64
"""Stripped state events kept per membership (the spec suggests seven types)."""


class OutOfBandMemberships:
    """Stores out-of-band memberships and tells sync and push about them."""

    def __init__(
        self,
        store: RoomStore,
        notifier: Notifier,
        listeners: Sequence[Callable[[PersistedEvent], None]] = (),
    ) -> None:
        self.store = store
        self._notifier = notifier
        self._listeners = list(listeners)
        """Called with each new membership as a live event (push evaluation)."""

    async def record(
        self,
        user_id: str,
        room_id: str,
        room_version: str,
        event_id: str,
        pdu: dict[str, object],
        stripped_state: Sequence[dict[str, object]],
        servers: Sequence[str],
        *,
        origin: str | None = None,
    ) -> int:
        """Store ``pdu`` (the user's member event) as their membership in ``room_id``;
        wake their /sync and tell the listeners. Returns its stream ordering."""
        stream = await self.store.db.write(
            partial(
                oob_store.store,
                user_id=user_id,
                room_id=room_id,
                event_id=event_id,
                pdu=pdu,
                room_version=room_version,
                stripped_state=list(stripped_state)[:MAX_STRIPPED_STATE],
                servers=list(dict.fromkeys(servers)),
                now_ms=int(time.time() * 1000),
            )
        )
        event = PersistedEvent(
            event_id=event_id,
            room_id=room_id,
            stream_ordering=stream,
            pdu=pdu,
            kind=EventKind.NEW,
            origin=origin,
        )
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("listener %r failed on %s", listener, event_id)
        self._notifier.notify(stream, room_id, (user_id,))
        return stream

    async def get(self, user_id: str, room_id: str) -> OutOfBandMembership | None:
        """The user's out-of-band membership in the room, if any (current or not)."""
        return await self.store.db.read(oob_store.get, user_id, room_id)

    async def current(self, user_id: str, room_id: str) -> OutOfBandMembership | None:
        """The user's out-of-band membership in the room when it is their membership
        now: newer than their member event in the room's state, if the room is here."""
        found = await self.get(user_id, room_id)
        if found is None:
            return None
        held = await self.store.db.read(oob_store.member_stream_ordering, room_id, user_id)
        return found if held is None or held < found.stream_ordering else None
