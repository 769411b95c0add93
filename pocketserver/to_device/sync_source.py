"""The ``to_device`` part of ``/sync``: the syncing device's send-to-device messages.

Spec: modules/send_to_device.md "Server behaviour". Messages queued in ``(since,
upto]`` are sent oldest first, at most ``MAX_PER_SYNC`` per response (the spec
recommends 100). When more are waiting, the response's token names the position of
the last one sent (``ctx.delivered_upto``), so the next sync sends the rest at once.

A message is deleted only when the device syncs again with a ``since`` at or past
it: the client has then surely received the response that carried it. A client that
dies mid-sync and retries with its old token gets the same messages again.

Most syncs find an empty inbox. After a read that found the inbox empty up to the
stream position ``p`` (nothing in ``(since, p]`` and everything at or below ``since``
deleted), the source remembers ``p`` for the device; while the stream is still at
``p`` nothing can have arrived (positions only grow, and a message takes a new one),
so the next syncs skip the database.
"""

from __future__ import annotations

from collections import OrderedDict

import trio

from pocketserver.sync.sources import SyncContext
from pocketserver.to_device.service import STREAM, ToDeviceService

MAX_PER_SYNC = 100
MAX_EMPTY_REMEMBERED = 10_000
"""Devices whose empty inbox is remembered (about 150 bytes each); others are read."""


class ToDeviceSource:
    stream = STREAM

    def __init__(self, service: ToDeviceService, *, max_per_sync: int = MAX_PER_SYNC) -> None:
        self.service = service
        self.max_per_sync = max_per_sync
        self._empty_at: OrderedDict[tuple[str, str], int] = OrderedDict()
        """(user, device) -> a stream position up to which its inbox is known empty."""

    def position(self) -> int:
        return self.service.position()

    async def add_to_sync(self, ctx: SyncContext, since: int | None, upto: int) -> bool:
        """Add the device's messages in ``(since, upto]``; True if any were added."""
        if since is not None and since > upto:
            since = upto  # a token from before a database restore
        device = (ctx.user_id, ctx.device_id)
        if self._empty_at.get(device, -1) >= upto:
            await trio.lowlevel.checkpoint()
            return False
        found = await self.service.pending(
            ctx.user_id, ctx.device_id, since, upto, self.max_per_sync
        )
        if not found.messages:
            # Nothing in (since, upto], and what is at or below since was just deleted.
            self._empty_at[device] = upto
            self._empty_at.move_to_end(device)
            if len(self._empty_at) > MAX_EMPTY_REMEMBERED:
                self._empty_at.popitem(last=False)
            return False
        self._empty_at.pop(device, None)
        events = ctx.global_events("to_device")
        for message in found.messages:
            events.append(
                {"sender": message.sender, "type": message.type, "content": message.content}
            )
        if len(found.messages) >= self.max_per_sync:
            # Possibly more waiting: the token stops at the last one sent.
            ctx.delivered_upto[self.stream] = found.messages[-1].stream_id
        return True
