"""The device list stream's committed position, published to the notifier.

Key uploads know the position they wrote and publish it at once. Devices deleted by
the accounts code (logout, delete_devices, deactivation) are recorded by a database
trigger; :meth:`DeviceListStream.poke` (never blocks) asks :meth:`run` to read the
new position and publish it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from pocketserver.storage import e2e_keys as store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

log = logging.getLogger(__name__)

STREAM = "device_lists"


class DeviceListStream:
    def __init__(self, db: Database, notifier: Notifier, position: int) -> None:
        self.db = db
        self.notifier = notifier
        self._position = position
        self._poked = trio.Event()
        self.listeners: list[Callable[[int], None]] = []
        """Called with each new committed position (never blocking): the federation
        publisher of our users' device list changes."""
        notifier.notify_stream(STREAM, position)

    @classmethod
    async def open(cls, db: Database, notifier: Notifier) -> DeviceListStream:
        return cls(db, notifier, await db.read(store.stream_position))

    def position(self) -> int:
        return self._position

    def committed(self, position: int) -> None:
        """A write that took stream position ``position`` has committed."""
        if position > self._position:
            self._position = position
            self.notifier.notify_stream(STREAM, position)
            for listener in self.listeners:
                listener(position)

    def poke(self, *_: object) -> None:
        """Something outside this feature may have changed a device list (a device was
        deleted): have :meth:`run` learn the committed position. Never blocks."""
        self._poked.set()

    async def refresh(self) -> None:
        self.committed(await self.db.read(store.stream_position))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish positions written by others (device deletions) until cancelled."""
        task_status.started()
        while True:
            await self._poked.wait()
            self._poked = trio.Event()
            try:
                await self.refresh()
            except Exception:
                log.exception("could not read the device list stream position")
