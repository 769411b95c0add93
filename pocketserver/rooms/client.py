"""Room operations as a client asks for them: send, membership, state and reads.

Every write goes through the room writer (and so the auth rules); this layer adds
what clients need around it: idempotent transaction IDs, membership shortcuts,
access checks for reads (a user reads a room's state only while joined, or as it
was when they left), and rate limits.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping

import trio

from pocketserver.core.client_actions import ActionRefused, check_membership_action
from pocketserver.errors import MatrixError, forbidden, not_found
from pocketserver.ratelimit import RateLimiter
from pocketserver.rooms.canonical_alias import (
    CANONICAL_ALIAS,
    check_canonical_alias,
    without_alias,
)
from pocketserver.rooms.limits import RoomActionLimits
from pocketserver.rooms.locks import KeyedLocks
from pocketserver.rooms.reading import EventReader, ReadEvent
from pocketserver.rooms.relation_checks import check_new_relation
from pocketserver.rooms.store import RoomStore, StateKey
from pocketserver.rooms.visibility import filter_visible
from pocketserver.rooms.writer import PersistedEvent, RemoteSign, RoomWriter
from pocketserver.storage import discovery as discovery_store
from pocketserver.storage import state as state_store
from pocketserver.storage import stream as stream_store
from pocketserver.storage import transactions as txn_store

log = logging.getLogger(__name__)

MEMBER = "m.room.member"
MEMBERS_PAGE = 500
"""Member events read at a time when ``/members`` streams a room's current members."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class RoomClient:
    def __init__(
        self,
        writer: RoomWriter,
        reader: EventReader,
        message_limit: RateLimiter,
        limits: RoomActionLimits | None = None,
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.store: RoomStore = writer.store
        self._message_limit = message_limit
        self.limits = limits
        self._txn_locks = KeyedLocks()

    # --- sending -----------------------------------------------------------------------

    async def send(
        self,
        user_id: str,
        device_id: str,
        room_id: str,
        event_type: str,
        content: Mapping[str, object],
        txn_id: str,
        *,
        state_key: str | None = None,
        redacts: str | None = None,
    ) -> str:
        """Send an event once per (device, transaction ID); return its event ID.

        A retry with the same transaction ID returns the first event's ID and sends
        nothing (client-server API "Transaction identifiers"); a new one is checked for
        relations a client may not send (:func:`check_new_relation`) first.
        """
        async with self._txn_locks(f"{user_id}\x00{device_id}\x00{txn_id}"):
            earlier = await self.store.db.read(
                txn_store.get_event_for_txn, user_id, device_id, txn_id
            )
            if earlier is not None:
                return earlier[1]
            # Threads from related events, duplicate annotations (rooms/relation_checks.py).
            await check_new_relation(self.store, room_id, user_id, event_type, content)
            await self._check_send_limit(user_id, event_type, redacts)

            def record(conn: sqlite3.Connection, event: PersistedEvent) -> None:
                txn_store.record_txn(
                    conn, user_id, device_id, txn_id, room_id, event.event_id, _now_ms()
                )

            event = await self.writer.send_event(
                room_id, user_id, event_type, content, state_key, redacts=redacts, in_txn=record
            )
            return event.event_id

    async def _check_send_limit(self, user_id: str, event_type: str, redacts: str | None) -> None:
        """``rc_message``; with ``rc_admin_redaction`` set, a redaction of someone else's
        event counts under it instead (Synapse's ``is_admin_redaction``)."""
        limiter = self._message_limit
        admin_limit = self.limits.admin_redaction if self.limits is not None else None
        if admin_limit is not None and event_type == "m.room.redaction" and redacts:
            target = await self.store.get_event(redacts)
            if target is not None and target.pdu.get("sender") != user_id:
                limiter = admin_limit
        limiter.check(user_id, trio.current_time())

    async def set_state(
        self,
        user_id: str,
        room_id: str,
        event_type: str,
        state_key: str,
        content: Mapping[str, object],
        *,
        remote_sign: RemoteSign | None = None,
    ) -> str:
        """Send a state event; an identical one to the current state is not sent again.
        ``remote_sign``: as :meth:`RoomWriter.send_event` (an invite of another
        server's user).

        A member event is a membership change like the verbs' (Synapse sends it through
        ``update_membership``): joins and invites count under their rate limits.

        Raises:
            MatrixError: as :meth:`RoomWriter.send_event`; 400 ``M_BAD_ALIAS`` or
                ``M_INVALID_PARAM`` for a canonical alias event (rooms/canonical_alias.py).
        """
        current = await self.store.db.read(
            state_store.get_current_state_event_id, room_id, event_type, state_key
        )
        existing = await self.store.get_event(current) if current is not None else None
        if event_type == CANONICAL_ALIAS:
            before = existing.pdu.get("content") if existing is not None else None
            await check_canonical_alias(
                self.store.db, room_id, content, before if isinstance(before, Mapping) else None
            )
        if (
            current is not None
            and existing is not None
            and existing.pdu.get("sender") == user_id
            and existing.pdu.get("content") == dict(content)
        ):
            return current
        if event_type == MEMBER:
            membership = content.get("membership")
            await self._check_membership_limit(user_id, room_id, state_key, membership)
        event = await self.writer.send_event(
            room_id, user_id, event_type, content, state_key, remote_sign=remote_sign
        )
        return event.event_id

    async def drop_canonical_alias(self, user_id: str, room_id: str, alias: str) -> None:
        """After ``alias`` is deleted from the directory, take it out of the room's
        canonical alias event as ``user_id``, as Synapse does
        (``DirectoryHandler._update_canonical_alias``); a user without the power to
        change the event leaves it as it is (logged)."""
        current = await self.store.db.read(
            state_store.get_current_state_event_id, room_id, CANONICAL_ALIAS, ""
        )
        existing = await self.store.get_event(current) if current is not None else None
        content = existing.pdu.get("content") if existing is not None else None
        changed = without_alias(content, alias) if isinstance(content, Mapping) else None
        if changed is None:
            return
        try:
            await self.writer.send_event(room_id, user_id, CANONICAL_ALIAS, changed, "")
        except MatrixError as e:
            log.info("alias %s deleted; %s not updated: %s", alias, CANONICAL_ALIAS, e.error)

    async def membership(
        self,
        sender: str,
        room_id: str,
        target: str,
        membership: str,
        *,
        reason: str | None = None,
        extra: Mapping[str, object] | None = None,
        action: str | None = None,
        ratelimit: bool = False,
        remote_sign: RemoteSign | None = None,
    ) -> PersistedEvent:
        """Change ``target``'s membership (join, invite, leave, ban, knock) as ``sender``.

        ``action`` names the client verb when it is narrower than the membership:
        ``kick`` and ``unban`` both write ``leave`` but only for a target in the room
        or banned (:func:`check_membership_action`, checked under the room's lock).
        ``ratelimit``: a client's own request, limited by ``rc_joins`` (a join to a room
        the user is not joined to) or ``rc_invites`` (rooms/limits.py).
        """
        content: dict[str, object] = {**(extra or {}), "membership": membership}
        if reason:
            content["reason"] = reason
        if await self.store.room_version(room_id) is None:
            raise not_found(f"unknown room {room_id}")
        if ratelimit:
            await self._check_membership_limit(sender, room_id, target, membership)
        guard = None
        if action is not None:

            async def guard(state: Mapping[StateKey, str]) -> None:
                event_id = state.get((MEMBER, target))
                event = await self.store.get_event(event_id) if event_id else None
                now = event.pdu.get("content") if event else None
                current = now.get("membership") if isinstance(now, Mapping) else None
                try:
                    check_membership_action(action, current if isinstance(current, str) else None)
                except ActionRefused as e:
                    raise MatrixError(e.status, e.errcode, e.message) from None

        return await self.writer.send_event(
            room_id, sender, MEMBER, content, target, guard=guard, remote_sign=remote_sign
        )

    async def check_join_limit(self, user_id: str, room_id: str) -> None:
        """``rc_joins`` for a user's own join made elsewhere (through another server).

        Raises:
            MatrixError: 429 ``M_LIMIT_EXCEEDED``.
        """
        await self._check_membership_limit(user_id, room_id, user_id, "join")

    async def _check_membership_limit(
        self, sender: str, room_id: str, target: str, membership: object
    ) -> None:
        """``rc_joins`` for a join to a room the user is not joined to (a profile change
        is not a join, as Synapse), ``rc_invites`` for an invite."""
        if self.limits is None:
            return
        if membership == "join" and sender == target:
            current, _ = await self.membership_of(room_id, target)
            if current != "join":
                self.limits.check_join(sender, room_id)
        elif membership == "invite":
            self.limits.check_invite(sender, room_id, target)

    async def is_current_member_event(
        self, room_id: str, user_id: str, content: Mapping[str, object]
    ) -> bool:
        """Whether ``user_id``'s current member event was sent by them with exactly
        ``content``: then a repeat of the change writes nothing (as Synapse's
        ``update_membership``; SyTest 30rooms/01state "Joining room twice is
        idempotent"). The spec does not say; a new identical event would only add noise."""
        _, event_id = await self.membership_of(room_id, user_id)
        event = await self.store.get_event(event_id) if event_id else None
        return (
            event is not None
            and event.pdu.get("sender") == user_id
            and event.pdu.get("content") == dict(content)
        )

    # --- reading -----------------------------------------------------------------------

    async def membership_of(self, room_id: str, user_id: str) -> tuple[str | None, str | None]:
        """(membership, member event ID) of a user in the room's current state."""
        event_id = await self.store.db.read(
            state_store.get_current_state_event_id, room_id, MEMBER, user_id
        )
        if event_id is None:
            return None, None
        event = await self.store.get_event(event_id)
        content = event.pdu.get("content") if event else None
        membership = content.get("membership") if isinstance(content, Mapping) else None
        return (membership if isinstance(membership, str) else None), event_id

    async def is_world_readable(self, room_id: str) -> bool:
        """Whether the room's current ``history_visibility`` is ``world_readable``."""
        hv_id = await self.store.db.read(
            state_store.get_current_state_event_id, room_id, "m.room.history_visibility", ""
        )
        hv_event = await self.store.get_event(hv_id) if hv_id else None
        content = hv_event.pdu.get("content") if hv_event else None
        return isinstance(content, Mapping) and content.get("history_visibility") == (
            "world_readable"
        )

    async def visible_state_ids(self, user_id: str, room_id: str) -> dict[StateKey, str]:
        """The state the user may read: current while joined, else as it was when they
        left (client-server API "GET /rooms/{roomId}/state"); anyone may read the
        current state of a room whose history is ``world_readable`` now (spec
        history_visibility.md; Synapse's ``check_user_in_room_or_world_readable``).

        A banned user is refused like one who was never in the room: the spec speaks
        only of users who "left"; Synapse (``allow_departed_users`` accepts ``leave``
        only) answers 403 to them, and SyTest's 30rooms/07ban.pl checks that.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if the user was never in the room or is
                banned from it (and it is not world-readable).
        """
        current, group = await self._visible_state(user_id, room_id)
        if current:
            return await self.store.current_state_ids(room_id)
        return dict(await self.store.group_state(group))

    async def _visible_state(self, user_id: str, room_id: str) -> tuple[bool, int | None]:
        """Which state :meth:`visible_state_ids` gives: ``(True, None)`` the current
        state, ``(False, group)`` the state group after the user left.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN``, as :meth:`visible_state_ids`.
        """
        if await self.store.room_version(room_id) is None:
            raise forbidden("you are not in this room")
        membership, event_id = await self.membership_of(room_id, user_id)
        if membership == "join":
            return True, None
        if membership == "leave" and event_id is not None:
            event = await self.store.get_event(event_id)
            if event is not None:
                before = await self.store.group_state(event.state_before)
                was = before.get((MEMBER, user_id))
                if was is not None:  # they had been in the room
                    return False, event.state_after
        if await self.is_world_readable(room_id):
            return True, None
        raise forbidden("you are not in this room")

    async def current_members(
        self,
        user_id: str,
        room_id: str,
        membership: str | None = None,
        not_membership: str | None = None,
    ) -> AsyncIterator[ReadEvent] | None:
        """The member events of the room's current state, read a page at a time, if
        that is the state the user may read (None: use :meth:`members`). A big room's
        members are never held whole: ``/members`` streams them out.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN``, as :meth:`visible_state_ids` (before
                anything is read).
        """
        current, _ = await self._visible_state(user_id, room_id)
        if not current:
            return None
        return self._member_pages(room_id, membership, not_membership)

    async def _member_pages(
        self, room_id: str, membership: str | None, not_membership: str | None
    ) -> AsyncIterator[ReadEvent]:
        after = ""
        while True:
            page = await self.store.db.read(
                state_store.current_members_page,
                room_id,
                after,
                MEMBERS_PAGE,
                membership,
                not_membership,
            )
            # Not cached: a 50,000-member list read once would push out the hot events.
            events = await self.reader.get_events(
                [event_id for _, event_id in page], remember=False
            )
            for _, event_id in page:
                event = events.get(event_id)
                if event is not None:
                    yield event
            if len(page) < MEMBERS_PAGE:
                return
            after = page[-1][0]

    async def visible_state_events(self, user_id: str, room_id: str) -> list[ReadEvent]:
        ids = await self.visible_state_ids(user_id, room_id)
        events = await self.reader.get_events(ids.values())
        return [events[i] for i in ids.values() if i in events]

    async def state_event(
        self, user_id: str, room_id: str, event_type: str, state_key: str
    ) -> ReadEvent:
        ids = await self.visible_state_ids(user_id, room_id)
        event_id = ids.get((event_type, state_key))
        if event_id is None:
            raise not_found("no such state event")
        events = await self.reader.get_events([event_id])
        if event_id not in events:
            raise not_found("no such state event")
        return events[event_id]

    async def joined_rooms(self, user_id: str) -> list[str]:
        return await self.store.db.read(state_store.rooms_for_user, user_id, "join")

    async def members(
        self,
        user_id: str,
        room_id: str,
        membership: str | None = None,
        not_membership: str | None = None,
        at_position: int | None = None,
    ) -> list[ReadEvent]:
        """Member events of the room's visible state, or (``at_position``, an exclusive
        stream bound from a pagination token) of the state at that point, never later
        than what the user may see."""
        if at_position is None:
            state = await self.visible_state_events(user_id, room_id)
        else:
            state = await self._state_events_at(user_id, room_id, at_position)
        result = []
        for ev in state:
            if ev.pdu.get("type") != MEMBER:
                continue
            content = ev.pdu.get("content")
            value = content.get("membership") if isinstance(content, Mapping) else None
            if membership is not None and value != membership:
                continue
            if not_membership is not None and value == not_membership:
                continue
            result.append(ev)
        return result

    async def visible_events(
        self, user_id: str, room_id: str, event_ids: list[str]
    ) -> dict[str, ReadEvent]:
        """The events of ``room_id`` among ``event_ids`` that the user may see."""
        events = await self.reader.get_events(event_ids)
        in_room = [ev for ev in events.values() if ev.room_id == room_id]
        membership, _ = await self.membership_of(room_id, user_id)
        seen = await filter_visible(self.store, user_id, in_room, joined_now=membership == "join")
        return {ev.event_id: ev for ev in seen}

    async def _state_events_at(
        self, user_id: str, room_id: str, at_position: int
    ) -> list[ReadEvent]:
        visible = await self.visible_state_ids(user_id, room_id)  # raises if never a member
        membership, member_event = await self.membership_of(room_id, user_id)
        bound = at_position - 1
        if membership != "join" and member_event is not None:
            left = await self.store.get_event(member_event)
            if left is not None:
                bound = min(bound, left.stream_ordering)
        last = await self.store.db.read(stream_store.last_event_before, room_id, bound)
        if last is not None and membership not in ("join", "leave", "ban"):
            # A non-member reading a world-readable room: only a point they may see.
            readable = await self.reader.get_events([last])
            if not await filter_visible(
                self.store, user_id, list(readable.values()), joined_now=False
            ):
                raise forbidden("you may not read the room at that point")
        event = await self.store.get_event(last) if last else None
        ids = await self.store.group_state(event.state_after) if event else visible
        events = await self.reader.get_events(ids.values())
        return [events[i] for i in ids.values() if i in events]

    async def event_near_ts(
        self, user_id: str, room_id: str, ts: int, forwards: bool, candidates: int
    ) -> ReadEvent | None:
        """The first event the user may see at or after ``ts`` (``forwards``) or at or
        before it, among the ``candidates`` nearest (``GET /timestamp_to_event``).

        Raises:
            MatrixError: 403 unless the user is (or was) in the room.
        """
        await self.visible_state_ids(user_id, room_id)
        near = await self.store.db.read(
            discovery_store.events_near_ts, room_id, ts, forwards, candidates
        )
        events = await self.reader.get_events(eid for eid, _ in near)
        ordered = [events[eid] for eid, _ in near if eid in events]
        membership, _ = await self.membership_of(room_id, user_id)
        visible = await filter_visible(
            self.store, user_id, ordered, joined_now=membership == "join"
        )
        return visible[0] if visible else None

    async def mutual_rooms(
        self, user_a: str, user_b: str, after: str | None, limit: int
    ) -> tuple[list[str], int]:
        """Rooms both users are joined to, by room ID after ``after`` (at most
        ``limit``), and how many there are in all."""
        return await self.store.db.read(discovery_store.mutual_rooms, user_a, user_b, after, limit)

    async def require_joined(self, user_id: str, room_id: str) -> None:
        membership, _ = await self.membership_of(room_id, user_id)
        if membership != "join":
            raise MatrixError(403, "M_FORBIDDEN", "you are not joined to this room")
