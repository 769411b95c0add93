"""The account data part of ``/sync``: top-level ``account_data`` and each joined room's.

Spec: client-server-api "Syncing" (sync.yaml ``account_data``, ``rooms.join.*.
account_data``) and modules/account_data.md. Items changed in ``(since, upto]`` are
sent; rooms sent from scratch (``ctx.new_rooms``) get all of their items. The filter's
``account_data`` and ``room.account_data`` ``types`` / ``not_types`` / ``rooms`` apply
(account data has no sender, so sender conditions do not).
"""

from __future__ import annotations

from dataclasses import replace

from pocketserver.account_data.service import STREAM, AccountDataService
from pocketserver.core.event_filter import EventFilter
from pocketserver.storage import account_data as store
from pocketserver.sync.sources import SyncContext


def _without_senders(flt: EventFilter) -> EventFilter:
    return replace(flt, senders=None, not_senders=(), contains_url=None)


class AccountDataSource:
    stream = STREAM

    def __init__(self, service: AccountDataService) -> None:
        self.service = service

    def position(self) -> int:
        return self.service.position()

    async def add_to_sync(self, ctx: SyncContext, since: int | None, upto: int) -> bool:
        """Add the account data changed in ``(since, upto]``; True if anything was added."""
        if since is not None and since > upto:
            since = upto  # a token from before a database restore
        joined = set(ctx.joined_rooms)
        whole = sorted(ctx.new_rooms & joined)
        if since is not None and since >= upto and not whole:
            return False
        rows = await self.service.db.read(store.changed_between, ctx.user_id, since, upto, whole)
        global_filter = _without_senders(ctx.filter.account_data)
        room_filter = _without_senders(ctx.filter.room_account_data)
        added = False
        for row in rows:
            event: dict[str, object] = {"type": row.type, "content": row.content}
            if row.room_id == store.GLOBAL:
                if global_filter.matches(event):
                    ctx.global_events("account_data").append(event)
                    added = True
            elif row.room_id in joined and room_filter.matches({**event, "room_id": row.room_id}):
                ctx.room_events(row.room_id, "account_data").append(event)
                added = True
        return added
