"""The ``to_device`` part of ``/sync``: the syncing device's send-to-device messages.

Spec: modules/send_to_device.md "Server behaviour". Messages queued in ``(since,
upto]`` are sent oldest first, at most ``MAX_PER_SYNC`` per response (the spec
recommends 100). When more are waiting, the response's token names the position of
the last one sent (``ctx.delivered_upto``), so the next sync sends the rest at once.

A message is deleted only when the device syncs again with a ``since`` at or past
it: the client has then surely received the response that carried it. A client that
dies mid-sync and retries with its old token gets the same messages again.
"""

from __future__ import annotations

from pocketserver.sync.sources import SyncContext
from pocketserver.to_device.service import STREAM, ToDeviceService

MAX_PER_SYNC = 100


class ToDeviceSource:
    stream = STREAM

    def __init__(self, service: ToDeviceService, *, max_per_sync: int = MAX_PER_SYNC) -> None:
        self.service = service
        self.max_per_sync = max_per_sync

    def position(self) -> int:
        return self.service.position()

    async def add_to_sync(self, ctx: SyncContext, since: int | None, upto: int) -> bool:
        """Add the device's messages in ``(since, upto]``; True if any were added."""
        if since is not None and since > upto:
            since = upto  # a token from before a database restore
        found = await self.service.pending(
            ctx.user_id, ctx.device_id, since, upto, self.max_per_sync
        )
        if not found.messages:
            return False
        events = ctx.global_events("to_device")
        for message in found.messages:
            events.append(
                {"sender": message.sender, "type": message.type, "content": message.content}
            )
        if len(found.messages) >= self.max_per_sync:
            # Possibly more waiting: the token stops at the last one sent.
            ctx.delivered_upto[self.stream] = found.messages[-1].stream_id
        return True
