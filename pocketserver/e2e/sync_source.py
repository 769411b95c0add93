"""The end-to-end encryption part of ``/sync``.

Spec: modules/end_to_end_encryption.md "Extensions to /sync": every response carries
the syncing device's ``device_one_time_keys_count`` (``signed_curve25519`` always
present, 0 when there are none, as clients expect) and its
``device_unused_fallback_key_types``; an incremental sync carries ``device_lists``
(``changed``, ``left``) for ``(since, upto]`` of both the device list stream and the
room event stream (joins and leaves). Only ``device_lists`` counts as a change that
ends a long-poll (as in Synapse, a change of the key counts alone does not).

The counts are remembered per device, so that a sync with nothing new reads nothing:
:class:`E2eKeys` reports every upload and claim, and deleting devices (an ID could
come back with a new login) forgets them all. A read that overlapped such a report
is not remembered.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict

import trio

from pocketserver.e2e.keys import E2eKeys
from pocketserver.e2e.stream import STREAM
from pocketserver.storage import device_lists
from pocketserver.storage import e2e_keys as key_store
from pocketserver.streams.token import SyncToken
from pocketserver.sync.sources import SyncContext

ONE_TIME_KEY_ALGORITHM = "signed_curve25519"
MAX_COUNTS_REMEMBERED = 10_000
"""Devices whose key counts are remembered (a few hundred bytes each)."""
KeyCounts = tuple[dict[str, int], list[str]]

Windows = tuple[int, int, int, int]
"""(events after, events upto, device lists after, device lists upto)."""


def _read(
    conn: sqlite3.Connection,
    user_id: str,
    device_id: str,
    windows: Windows | None,
    with_counts: bool,
) -> tuple[KeyCounts | None, device_lists.DeviceListDelta | None]:
    """The device's key counts (unless known) and the device list delta (when there
    are windows to look at): one read transaction for the whole part."""
    counts = None
    if with_counts:
        counts = (
            key_store.one_time_key_counts(conn, user_id, device_id),
            key_store.unused_fallback_algorithms(conn, user_id, device_id),
        )
    found = device_lists.delta(conn, user_id, *windows) if windows is not None else None
    return counts, found


class DeviceListSource:
    stream = STREAM

    def __init__(self, keys: E2eKeys) -> None:
        self.keys = keys
        self._counts: OrderedDict[tuple[str, str], KeyCounts] = OrderedDict()
        self._generation = 0
        """Advanced by every report of changed keys: a read that began before one may
        have seen the old counts, so its result is not remembered."""
        keys.key_count_listeners.append(self.key_counts_changed)

    def key_counts_changed(self, user_id: str, device_id: str) -> None:
        """The device's one-time or fallback keys may have changed (never blocks)."""
        self._generation += 1
        self._counts.pop((user_id, device_id), None)

    def forget_key_counts(self, *_: object) -> None:
        """Devices were deleted (an ID may come back with a new login): forget all."""
        self._generation += 1
        self._counts.clear()

    def position(self) -> int:
        return self.keys.stream.position()

    async def add_to_sync(self, ctx: SyncContext, since: int | None, upto: int) -> bool:
        windows: Windows | None = None
        if ctx.since is not None and since is not None:
            next_batch = ctx.body.get("next_batch")
            assert isinstance(next_batch, str)
            events_upto = SyncToken.parse(next_batch).events
            events_since = min(ctx.since.events, events_upto)
            lists_since = min(since, upto)
            if events_since < events_upto or lists_since < upto:
                windows = (events_since, events_upto, lists_since, upto)
        device = (ctx.user_id, ctx.device_id)
        if windows is None:
            # An async function always checkpoints; done before the lookup, so that
            # an upload or claim that forgets the counts meanwhile cannot leave us
            # holding an entry that is gone (a KeyError, once, under js-sdk's crypto).
            await trio.lowlevel.checkpoint()
        known = self._counts.get(device)
        if known is not None and windows is None:
            self._counts.move_to_end(device)
            found = None
        else:
            generation = self._generation
            read, found = await self.keys.db.read(
                _read, ctx.user_id, ctx.device_id, windows, known is None
            )
            if read is not None:
                known = read
                if generation == self._generation:
                    self._counts[device] = read
                    if len(self._counts) > MAX_COUNTS_REMEMBERED:
                        self._counts.popitem(last=False)
        assert known is not None
        one_time, unused = known
        ctx.body["device_one_time_keys_count"] = {ONE_TIME_KEY_ALGORITHM: 0, **one_time}
        ctx.body["device_unused_fallback_key_types"] = list(unused)
        if found is None:
            return False
        ctx.body["device_lists"] = {"changed": found.changed, "left": found.left}
        return bool(found.changed or found.left)
