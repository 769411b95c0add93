"""Censoring redacted events once ``redaction_retention_period`` has passed.

Until then the original stays in the database (so that a moderator can review a
report); afterwards the stored JSON is replaced by its redacted form for good.
"""

from __future__ import annotations

import logging
import time

import trio

from pocketserver.core.redaction import redact
from pocketserver.rooms.reading import EventReader
from pocketserver.storage import events as event_store

log = logging.getLogger(__name__)

BATCH = 100


class RedactionCensor:
    """A background task; ``retention_ms`` None keeps originals forever."""

    def __init__(
        self, reader: EventReader, retention_ms: int | None, interval_s: float = 3600.0
    ) -> None:
        self._reader = reader
        self._db = reader.store.db
        self._retention_ms = retention_ms
        self._interval_s = interval_s

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self._retention_ms is None:
            return
        while True:
            censored = await self.censor_due()
            if censored:
                log.info("censored %d redacted event(s) past the retention period", censored)
            await trio.sleep(self._interval_s)

    async def censor_due(self, now_ms: int | None = None) -> int:
        """Censor every redacted event whose redaction is older than the retention period."""
        if self._retention_ms is None:
            return 0
        before = (now_ms if now_ms is not None else int(time.time() * 1000)) - self._retention_ms
        done = 0
        skipped: set[str] = set()
        while True:
            due = await self._db.read(
                event_store.redactions_due_for_censoring, before, BATCH + len(skipped)
            )
            due = [(target, red) for target, red in due if target not in skipped]
            if not due:
                return done
            for target_id, _ in due:
                seen = await self._reader.get_events([target_id])
                event = seen.get(target_id)
                if event is None or event.redacted_because is None:
                    skipped.add(target_id)  # the redaction does not apply (yet)
                    continue
                version = await self._reader.store.room_version(event.room_id) or "1"
                stored = await self._reader.store.get_event(target_id)
                assert stored is not None
                await self._db.write(
                    event_store.censor_event, target_id, redact(stored.pdu, version)
                )
                self._reader.store.forget_event(target_id)
                done += 1
