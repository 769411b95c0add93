"""A writer listener that follows live joins without blocking the writer: each join is
noted in a bounded queue (past it, skipped with a count) and one task handles them in
order. Presence and device lists both act on joins (federation/presence_out.py,
federation/e2e/on_join.py)."""

from __future__ import annotations

import logging

import trio

from pocketserver.core.events import joined_user
from pocketserver.rooms.writer import PersistedEvent

log = logging.getLogger(__name__)


class JoinQueue:
    """Subclasses say which joins they want (:meth:`wants`) and what to do with one
    (:meth:`handle`); register :meth:`on_persisted` with the room writer and start
    :meth:`run` in the server's nursery."""

    what = "join"
    """Named in the log when handling a join fails."""

    def __init__(self, size: int) -> None:
        self._in, self._out = trio.open_memory_channel[tuple[str, str, int | None]](size)
        self.skipped = 0

    def wants(self, user_id: str) -> bool:
        return True

    async def handle(self, user_id: str, room_id: str, before: int | None) -> None:
        raise NotImplementedError

    def on_persisted(self, event: PersistedEvent) -> None:
        """Writer listener (never blocks): note a live join this queue wants."""
        user = joined_user(event.pdu) if event.live else None
        if user is None or not self.wants(user):
            return
        try:
            self._in.send_nowait((user, event.room_id, event.state_before))
        except trio.WouldBlock:
            self.skipped += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for user_id, room_id, before in self._out:
            try:
                await self.handle(user_id, room_id, before)
            except Exception:  # one failure must not stop the others
                log.exception("%s for %s joining %s failed", self.what, user_id, room_id)
