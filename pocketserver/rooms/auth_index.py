"""The background task that indexes state events the auth-chain index does not hold
yet: a database from before migration 027 (its whole backlog), and events stored
before one of their auth events (indexed once it arrives).

Lazy and bounded: one write transaction of at most ``batch`` events at a time, with a
checkpoint between them, so the backlog of a big room never holds the writer for
long; until an event is indexed, questions about it walk ``event_auth`` as before
(``storage/auth_chains.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from pocketserver.storage import auth_chains
from pocketserver.storage.db import Database

log = logging.getLogger(__name__)

BATCH = 500
IDLE_S = 30.0


@dataclass(frozen=True, slots=True)
class IndexerStatistics:
    indexed_batches: int
    pending: int


class AuthChainIndexer:
    """Runs :func:`pocketserver.storage.auth_chains.index_pending` until nothing is
    ready, then looks again every ``idle_s``."""

    def __init__(self, db: Database, batch: int = BATCH, idle_s: float = IDLE_S) -> None:
        self._db = db
        self._batch = batch
        self._idle_s = idle_s
        self._batches = 0
        self._pending = 0

    def statistics(self) -> IndexerStatistics:
        return IndexerStatistics(self._batches, self._pending)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if await self.index_some() == 0:
                await trio.sleep(self._idle_s)

    async def index_some(self) -> int:
        """One batch; how many pending events it looked at (0: none is ready)."""
        looked = await self._db.write(auth_chains.index_pending, self._batch)
        if looked:
            self._batches += 1
            self._pending = await self._db.read(auth_chains.pending_count)
            if self._pending == 0:
                log.info("auth-chain index: every state event is indexed")
        return looked

    async def index_all(self) -> None:
        """Index every ready pending event now (tests, admin tools)."""
        looked = await self.index_some()
        while looked:
            looked = await self.index_some()  # each db.write checkpoints
