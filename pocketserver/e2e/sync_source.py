"""The end-to-end encryption part of ``/sync``.

Spec: modules/end_to_end_encryption.md "Extensions to /sync": every response carries
the syncing device's ``device_one_time_keys_count`` (``signed_curve25519`` always
present, 0 when there are none, as clients expect) and its
``device_unused_fallback_key_types``; an incremental sync carries ``device_lists``
(``changed``, ``left``) for ``(since, upto]`` of both the device list stream and the
room event stream (joins and leaves). Only ``device_lists`` counts as a change that
ends a long-poll.
"""

from __future__ import annotations

from pocketserver.e2e.keys import E2eKeys
from pocketserver.e2e.stream import STREAM
from pocketserver.storage import device_lists
from pocketserver.sync.sources import SyncContext
from pocketserver.sync.token import SyncToken

ONE_TIME_KEY_ALGORITHM = "signed_curve25519"


class DeviceListSource:
    stream = STREAM

    def __init__(self, keys: E2eKeys) -> None:
        self.keys = keys

    def position(self) -> int:
        return self.keys.stream.position()

    async def add_to_sync(self, ctx: SyncContext, since: int | None, upto: int) -> bool:
        counts, unused = await self.keys.counts(ctx.user_id, ctx.device_id)
        ctx.body["device_one_time_keys_count"] = {ONE_TIME_KEY_ALGORITHM: 0, **counts}
        ctx.body["device_unused_fallback_key_types"] = unused
        if ctx.since is None or since is None:
            return False
        next_batch = ctx.body.get("next_batch")
        assert isinstance(next_batch, str)
        events_upto = SyncToken.parse(next_batch).events
        events_since = min(ctx.since.events, events_upto)
        found = await self.keys.db.read(
            device_lists.delta, ctx.user_id, events_since, events_upto, min(since, upto), upto
        )
        ctx.body["device_lists"] = {"changed": found.changed, "left": found.left}
        return bool(found.changed or found.left)
