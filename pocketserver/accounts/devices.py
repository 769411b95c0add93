"""Device management (client-server API "Device management") and last-seen tracking.

Every authenticated request notes ``(device, time, address, user agent)`` in a
bounded in-memory map (user agents cut to :data:`MAX_USER_AGENT` characters and
shared between entries); a background task writes the map in one transaction every
``flush_interval_s``. So a busy client costs one row update per interval, not
one per request, and reads merge in what is not written yet.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable

import trio

from pocketserver.accounts.service import MAX_DISPLAY_NAME_LENGTH, AccountService
from pocketserver.errors import MatrixError, not_found
from pocketserver.storage import device_info as store
from pocketserver.storage.db import Database
from pocketserver.storage.device_info import DeviceInfo

log = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL_S = 60.0
DEFAULT_MAX_PENDING = 10_000
MAX_USER_AGENT = 256

DeviceKey = tuple[str, str]


def _now_ms() -> int:
    return int(time.time() * 1000)


class DeviceActivity:
    """Last-seen times and addresses of devices, batched in memory."""

    def __init__(
        self,
        db: Database,
        *,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._db = db
        self._interval = flush_interval_s
        self._max = max_pending
        self._pending: dict[DeviceKey, tuple[int, str, str | None]] = {}
        self.dropped = 0

    def seen(
        self, user_id: str, device_id: str, address: str, user_agent: str | None = None
    ) -> None:
        """Note a request by the device (never blocks; past the bound the sighting is dropped)."""
        key = (user_id, device_id)
        if key not in self._pending and len(self._pending) >= self._max:
            self.dropped += 1
            return
        agent = sys.intern(user_agent[:MAX_USER_AGENT]) if user_agent else None
        self._pending[key] = (_now_ms(), address, agent)

    def pending(self, user_id: str, device_id: str) -> tuple[int, str, str | None] | None:
        return self._pending.get((user_id, device_id))

    def forget(self, user_id: str, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            self._pending.pop((user_id, device_id), None)

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        rows = [(u, d, ts, ip, agent) for (u, d), (ts, ip, agent) in batch.items()]
        await self._db.write(store.record_last_seen, rows)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush every interval until cancelled, then once more."""
        task_status.started()
        try:
            while True:
                await trio.sleep(self._interval)
                try:
                    await self.flush()
                except Exception:
                    log.exception("could not store device last-seen times")
        finally:
            with trio.move_on_after(5, shield=True):
                await self.flush()


class DeviceManager:
    """List, rename and delete a user's devices; deleting revokes their tokens."""

    def __init__(self, db: Database, accounts: AccountService, activity: DeviceActivity) -> None:
        self._db = db
        self._accounts = accounts
        self.activity = activity

    def _with_activity(self, user_id: str, device: DeviceInfo) -> DeviceInfo:
        noted = self.activity.pending(user_id, device.device_id)
        if noted is None:
            return device
        return DeviceInfo(device.device_id, device.display_name, *noted)

    async def list(self, user_id: str) -> list[DeviceInfo]:
        devices = await self._db.read(store.list_devices, user_id)
        return [self._with_activity(user_id, d) for d in devices]

    async def get(self, user_id: str, device_id: str) -> DeviceInfo:
        """Raises: MatrixError 404 ``M_NOT_FOUND``."""
        device = await self._db.read(store.get_device, user_id, device_id)
        if device is None:
            raise not_found("no such device")
        return self._with_activity(user_id, device)

    async def rename(self, user_id: str, device_id: str, display_name: str) -> None:
        """Raises: MatrixError 400 ``M_INVALID_PARAM`` (too long), 404 ``M_NOT_FOUND``."""
        if len(display_name) > MAX_DISPLAY_NAME_LENGTH:
            raise MatrixError(
                400,
                "M_INVALID_PARAM",
                f"device display name is longer than {MAX_DISPLAY_NAME_LENGTH}",
            )
        position = await self._db.write(store.set_display_name, user_id, device_id, display_name)
        if position is None:
            raise not_found("no such device")
        if position:  # 0: the same name again, no change
            self._accounts.device_list_changed(position)

    async def delete(self, user_id: str, device_ids: Iterable[str]) -> None:
        """Delete devices (unknown ones are ignored) and revoke their tokens."""
        ids = list(dict.fromkeys(device_ids))
        hashes = await self._db.write(store.delete_devices, user_id, ids)
        self._accounts.forget_tokens(hashes)
        self.activity.forget(user_id, ids)
