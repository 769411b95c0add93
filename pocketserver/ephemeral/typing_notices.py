"""Typing notifications (client-server API "Typing Notifications"), in memory only.

Who is typing where is never written to disk: it lasts at most
:data:`MAX_TIMEOUT_MS` and is refreshed by clients. It is bounded: at most
:data:`MAX_PER_ROOM` typers in a room and :data:`MAX_TYPERS` in all; past a bound
the typer whose timeout ends first is dropped (it would have expired soonest).
Timeouts run on trio's clock: expired typers are dropped lazily when the stream
is read, and by :meth:`TypingService.run`, which sleeps until the next timeout so
that waiting /sync requests learn of it. Stream positions: see ``clock.py``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from pocketserver.ephemeral.clock import StreamClock, wall_ms
from pocketserver.streams.notifier import Notifier
from pocketserver.sync.sources import SyncContext

MAX_TIMEOUT_MS = 30_000
"""Longer requests are capped: clients refresh every 20-30 s while the user types."""
DEFAULT_TIMEOUT_MS = 30_000
MAX_PER_ROOM = 50
MAX_TYPERS = 1_000
MAX_CHANGED_ROOMS = 2_000

RequireJoined = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TypingStatistics:
    typers: int
    rooms: int
    position: int


class TypingService:
    """The ``typing`` stream: who types in which room, until when."""

    stream = "typing"

    def __init__(
        self,
        require_joined: RequireJoined,
        notifier: Notifier,
        *,
        max_per_room: int = MAX_PER_ROOM,
        max_typers: int = MAX_TYPERS,
        max_changed_rooms: int = MAX_CHANGED_ROOMS,
        now_ms: Callable[[], int] = wall_ms,
        activity: Callable[[str], None] = lambda user_id: None,
        on_change: Callable[[str, str, bool], None] = lambda user_id, room_id, typing: None,
    ) -> None:
        self._require_joined = require_joined
        self._on_change = on_change
        """Called with (user, room, typing) after every accepted request (the federation
        sender passes our users' on to the servers in the room); never blocks."""
        self._notifier = notifier
        self._max_per_room = max_per_room
        self._max_typers = max_typers
        self._rooms: dict[str, dict[str, float]] = {}  # room -> user -> trio deadline
        self._count = 0
        self._deadlines: list[tuple[float, str, str]] = []  # a heap; stale entries skipped
        self._clock = StreamClock(max_changed_rooms, now_ms)
        notifier.notify_stream(self.stream, self._clock.position)  # where the stream starts
        self._rescheduled = trio.Event()
        self.activity = activity
        """Called with the user ID when someone starts typing (presence activity)."""

    # --- writing ---------------------------------------------------------------------

    async def set_typing(
        self, user_id: str, room_id: str, typing: bool, timeout_ms: int = DEFAULT_TIMEOUT_MS
    ) -> None:
        """Mark ``user_id`` as typing in the room for ``timeout_ms`` (capped), or not.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if the user is not joined to the room.
        """
        await self._require_joined(user_id, room_id)
        self._expire(trio.current_time())
        if typing:
            self.activity(user_id)
            timeout_s = min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
            changed = self._start(user_id, room_id, trio.current_time() + timeout_s)
        else:
            changed = self._stop(user_id, room_id)
        if changed:
            self._notifier.notify_stream(self.stream, self._clock.advance(changed), rooms=changed)
        self._on_change(user_id, room_id, typing)

    def membership_changed(self, user_id: str, room_id: str, membership: object) -> None:
        """Someone who is no longer joined stops typing there at once (their client can't
        send the "stopped typing" request any more, and the room must not wait out the
        timeout)."""
        if membership != "join" and (changed := self._stop(user_id, room_id)):
            self._notifier.notify_stream(self.stream, self._clock.advance(changed), rooms=changed)

    def _start(self, user_id: str, room_id: str, deadline: float) -> list[str]:
        typers = self._rooms.setdefault(room_id, {})
        was_typing = user_id in typers
        typers[user_id] = deadline
        heapq.heappush(self._deadlines, (deadline, room_id, user_id))
        self._compact()
        self._rescheduled.set()
        if was_typing:
            return []  # only the timeout moved: nobody needs to hear of it
        self._count += 1
        changed = [room_id]
        if len(typers) > self._max_per_room:
            soonest = min(typers, key=typers.__getitem__)
            self._drop(room_id, soonest)
        while self._count > self._max_typers:
            deadline_, room, user = heapq.heappop(self._deadlines)
            if self._rooms.get(room, {}).get(user) == deadline_:
                self._drop(room, user)
                changed.append(room)
        return changed

    def _stop(self, user_id: str, room_id: str) -> list[str]:
        if user_id not in self._rooms.get(room_id, {}):
            return []
        self._drop(room_id, user_id)
        return [room_id]

    def _drop(self, room_id: str, user_id: str) -> None:
        typers = self._rooms[room_id]
        del typers[user_id]
        self._count -= 1
        if not typers:
            del self._rooms[room_id]

    def _compact(self) -> None:
        """Keep the heap proportional to the typers: refreshes leave stale entries."""
        if len(self._deadlines) > 2 * self._count + 64:
            self._deadlines = [
                (deadline, room, user)
                for room, typers in self._rooms.items()
                for user, deadline in typers.items()
            ]
            heapq.heapify(self._deadlines)

    def _expire(self, now: float) -> None:
        """Drop every typer whose timeout has passed; advance the stream if any was."""
        changed: list[str] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, room_id, user_id = heapq.heappop(self._deadlines)
            if self._rooms.get(room_id, {}).get(user_id) == deadline:
                self._drop(room_id, user_id)
                changed.append(room_id)
        if changed:
            self._notifier.notify_stream(self.stream, self._clock.advance(changed), rooms=changed)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Expire typers when their timeout passes, so that long-polls wake for it."""
        task_status.started()
        while True:
            self._rescheduled = trio.Event()
            next_deadline = self._deadlines[0][0] if self._deadlines else math.inf
            with trio.move_on_at(next_deadline):
                await self._rescheduled.wait()
            self._expire(trio.current_time())

    # --- reading ---------------------------------------------------------------------

    def typers(self, room_id: str) -> list[str]:
        """Who is typing in the room now."""
        self._expire(trio.current_time())
        return sorted(self._rooms.get(room_id, {}))

    def position(self) -> int:
        self._expire(trio.current_time())
        return self._clock.position

    async def add_to_sync(self, ctx: SyncContext, since: int | None, upto: int) -> bool:
        """An ``m.typing`` event for each joined room whose typers changed in
        ``(since, upto]``, and for rooms sent from scratch that have typers; an
        initial sync also gets the rooms whose typers changed lately."""
        joined = set(ctx.joined_rooms)
        if since is None:
            # Also rooms where typing stopped (as far as the clock remembers), as
            # Synapse sends every room with typing activity since it started: a client
            # that syncs from scratch right after a "stopped typing" request learns of
            # it (SyTest 30rooms/20typing "Typing can be explicitly stopped" waits for
            # an empty ``user_ids`` starting from an initial sync).
            rooms = {r for r in joined if r in self._rooms or r in self._clock}
        elif not self._clock.knows(since):
            rooms = joined  # a token from another process: reset every room
        else:
            rooms = {r for r in self._clock.changed_between(since, upto) if r in joined}
            rooms |= {r for r in ctx.new_rooms if r in self._rooms}
        added = False
        for room_id in sorted(rooms):
            if not ctx.filter.ephemeral.matches({"type": "m.typing", "room_id": room_id}):
                continue
            user_ids = sorted(self._rooms.get(room_id, {}))
            ctx.room_events(room_id, "ephemeral").append(
                {"type": "m.typing", "content": {"user_ids": user_ids}}
            )
            added = True
        await trio.lowlevel.checkpoint()
        return added

    def statistics(self) -> TypingStatistics:
        return TypingStatistics(self._count, len(self._rooms), self._clock.position)
