"""Wakes waiting requests when a stream advances, with positions only, and only the
requests the change concerns.

The notifier never carries payloads: a woken request reads what it needs from the
database up to the position it was given, so a sync token can never run ahead of
what is committed.

Each change is published with whom it concerns: a room event with its room (and the
users whose membership it changed: the kicked user is no longer in the room), a
receipt or typing change with its rooms, account data and to-device messages with
their users; presence and device lists concern everyone (who shares a room with the
user is not known here, and both change rarely). A waiting request names its user and
the rooms it listens to (the rooms it was joined to, invited to or knocking on when it
read its snapshot) and is woken only by a change to one of those rooms or naming its
user. That room set is the membership index: it is built from what each request read
anyway, so it costs no read and is bounded by the waiters; it stays in step because
every change of a user's membership names that user, which wakes the request to read
its rooms again.

A request that starts waiting after a change was published learns of it from a short
log of recent changes per stream (bounded: ``EVENTS_LOG``, ``STREAM_LOG`` entries).
When its token is older than what the log still holds it is woken at once to read
(the answer is then still right, just not free), so busy other rooms cost an idle
request at most one read per ``EVENTS_LOG`` events, not one per event.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import trio

EVENTS = "events"
"""The room event stream's name (the :class:`SyncToken` field)."""
EVENTS_LOG = 1024
STREAM_LOG = 256

_NOBODY: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class NotifierStatistics:
    position: int
    waiters: int
    notifications: int
    wakeups: int = 0
    """Waiting requests woken (a change wakes only the requests it concerns)."""


class _Change(NamedTuple):
    position: int
    rooms: frozenset[str] | None
    """Rooms the change is in; None with ``users`` None: it concerns everyone."""
    users: frozenset[str] | None
    upto: int
    """The highest position of this change and every change logged before it: a scan
    from the newest change stops at the first whose ``upto`` is not past the token
    (changes may be published slightly out of order)."""

    def concerns(self, user_id: str | None, rooms: Collection[str]) -> bool:
        if self.rooms is None and self.users is None:
            return True
        if user_id is None:  # a waiter for every change
            return True
        if self.users is not None and user_id in self.users:
            return True
        return self.rooms is not None and any(r in rooms for r in self.rooms)


@dataclass(eq=False, slots=True)
class _Waiter:
    user_id: str | None
    """None: woken by every change."""
    rooms: frozenset[str]
    woken: trio.Event = field(default_factory=trio.Event)


class Notifier:
    """The room event stream's position, and the positions of other named streams
    (account data, receipts, typing...), each advanced by whoever commits to it."""

    def __init__(self, position: int = 0) -> None:
        self._position = position
        self._streams: dict[str, int] = {}
        self._logs: dict[str, deque[_Change]] = {EVENTS: deque(maxlen=EVENTS_LOG)}
        self._floors: dict[str, int] = {EVENTS: position}
        """Stream -> the newest position the log no longer holds (or never held)."""
        self._waiters: set[_Waiter] = set()
        self._by_user: dict[str, set[_Waiter]] = {}
        self._by_room: dict[str, set[_Waiter]] = {}
        self._every: set[_Waiter] = set()
        self._notifications = 0
        self._wakeups = 0
        self._closing = False

    @property
    def closing(self) -> bool:
        """True once the server shuts down: waits end at once from then on."""
        return self._closing

    def close(self) -> None:
        """The server is shutting down: wake every waiter now and never wait again,
        so long-polls answer at once instead of holding the shutdown up."""
        self._closing = True
        self._wake(self._waiters)

    @property
    def position(self) -> int:
        """The newest accepted room event committed and published."""
        return self._position

    def notify(
        self, position: int, room_id: str | None = None, users: Collection[str] = ()
    ) -> None:
        """An event at ``position`` in ``room_id`` is committed: wake the requests
        listening to that room and those of ``users`` (whose membership it changed).
        Without ``room_id`` it concerns everyone. Publishing may come out of order
        (two rooms' writes finishing together): the position only ever grows."""
        self._position = max(self._position, position)
        rooms = None if room_id is None else frozenset((room_id,))
        who = None if room_id is None else (frozenset(users) if users else _NOBODY)
        self._publish(EVENTS, position, rooms, who)

    def stream_position(self, stream: str) -> int:
        return self._position if stream == EVENTS else self._streams.get(stream, 0)

    def notify_stream(
        self,
        stream: str,
        position: int,
        *,
        users: Collection[str] | None = None,
        rooms: Collection[str] | None = None,
    ) -> None:
        """Another stream is committed up to ``position``: wake the requests of
        ``users`` and those listening to ``rooms`` (everyone's if both are None)."""
        known = self._streams.get(stream)
        if known is not None and position <= known:
            return
        self._streams[stream] = position
        if known is None:
            # The stream's first position (its start): nothing before it is logged,
            # so a token older than it is woken by the floor; wake everyone now.
            self._floors[stream] = position
            self._logs[stream] = deque(maxlen=STREAM_LOG)
            self._notifications += 1
            self._wake(self._waiters)
            return
        if users is None and rooms is None:
            self._publish(stream, position, None, None)
        else:
            self._publish(
                stream,
                position,
                frozenset(rooms) if rooms else _NOBODY,
                frozenset(users) if users else _NOBODY,
            )

    def _publish(
        self,
        stream: str,
        position: int,
        rooms: frozenset[str] | None,
        users: frozenset[str] | None,
    ) -> None:
        log = self._logs[stream]
        if len(log) == log.maxlen:
            self._floors[stream] = max(self._floors[stream], log[0].position)
        change = _Change(position, rooms, users, max(position, log[-1].upto if log else 0))
        log.append(change)
        self._notifications += 1
        if change.rooms is None and change.users is None:
            self._wake(self._waiters)
            return
        woken: set[_Waiter] = set(self._every)
        for room_id in change.rooms or ():
            woken.update(self._by_room.get(room_id, ()))
        for user_id in change.users or ():
            woken.update(self._by_user.get(user_id, ()))
        self._wake(woken)

    def _wake(self, waiters: Iterable[_Waiter]) -> None:
        for waiter in waiters:
            if not waiter.woken.is_set():
                self._wakeups += 1
                waiter.woken.set()

    def changed_since(
        self, user_id: str | None, rooms: Collection[str], positions: Mapping[str, int]
    ) -> bool:
        """Whether a change published after ``positions`` (stream -> position) may
        concern ``user_id`` listening to ``rooms``: False only when the log shows for
        sure that none does. ``user_id`` None: any change."""
        if not isinstance(rooms, (set, frozenset)):
            rooms = frozenset(rooms)
        for stream, since in positions.items():
            if self.stream_position(stream) <= since:
                continue
            if since < self._floors.get(stream, 0):
                return True  # older than the log: it cannot tell
            for change in reversed(self._logs.get(stream, ())):
                if change.upto <= since:
                    break  # this change and every older one are not past the token
                if change.position > since and change.concerns(user_id, rooms):
                    return True
        return False

    async def wait_for_change(
        self,
        events: int,
        streams: Mapping[str, int],
        timeout_s: float = math.inf,
        *,
        user_id: str | None = None,
        rooms: Collection[str] = (),
    ) -> None:
        """Wait until a change past ``events`` (the room event stream) or past a named
        stream's position in ``streams`` concerns ``user_id`` listening to ``rooms``,
        or the timeout passes. Without ``user_id``, any change ends the wait."""
        positions = {**streams, EVENTS: events}
        if self._closing or self.changed_since(user_id, rooms, positions):
            await trio.lowlevel.checkpoint()  # an async function always checkpoints
            return
        waiter = _Waiter(user_id, frozenset(rooms))
        self._add(waiter)
        try:
            with trio.move_on_after(timeout_s):
                while not self._closing and not self.changed_since(
                    user_id, waiter.rooms, positions
                ):
                    waiter.woken = trio.Event()
                    await waiter.woken.wait()
        finally:
            self._remove(waiter)

    async def wait_past(self, position: int, timeout_s: float = math.inf) -> int:
        """Wait until the room event stream is past ``position`` (any room) or the
        timeout passes; return the current position either way."""
        await self.wait_for_change(position, {}, timeout_s)
        return self._position

    def _add(self, waiter: _Waiter) -> None:
        self._waiters.add(waiter)
        if waiter.user_id is None:
            self._every.add(waiter)
            return
        self._by_user.setdefault(waiter.user_id, set()).add(waiter)
        for room_id in waiter.rooms:
            self._by_room.setdefault(room_id, set()).add(waiter)

    def _remove(self, waiter: _Waiter) -> None:
        self._waiters.discard(waiter)
        self._every.discard(waiter)
        if waiter.user_id is not None:
            _discard(self._by_user, waiter.user_id, waiter)
        for room_id in waiter.rooms:
            _discard(self._by_room, room_id, waiter)

    def statistics(self) -> NotifierStatistics:
        return NotifierStatistics(
            self._position, len(self._waiters), self._notifications, self._wakeups
        )


def _discard(index: dict[str, set[_Waiter]], key: str, waiter: _Waiter) -> None:
    waiters = index.get(key)
    if waiters is not None:
        waiters.discard(waiter)
        if not waiters:
            del index[key]
