"""The push feature as one service: rules, evaluation, unread counts in /sync, /notifications.

``server.py`` builds a :class:`PushService`, calls :meth:`PushService.connect` once
the other services exist (writer listener, sync finisher, receipt listener) and
starts :meth:`PushService.run` in its background nursery.

``m.push_rules`` account data (push.md "Push Rules: Events"): when the account data
service exists, every rule change stores the user's whole ruleset as their
``m.push_rules`` item there (a derived copy for delivery; the rules themselves are
stored as changes only), so it reaches every device through the account data stream
and wakes their long-polls. An initial sync gets ``m.push_rules`` even for a user who
never changed anything. Without the account data service, ``m.push_rules`` is added
to initial syncs and to responses whose ``since`` room event position is not past
the user's last change (so it may repeat until a room event; a change alone does not
wake a long-poll).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

import trio

from pocketserver.cache import MemoryBudget
from pocketserver.errors import MatrixError
from pocketserver.push.evaluator import PushEvaluator
from pocketserver.push.rules import PushRules
from pocketserver.rooms.client_events import client_event
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.storage import push_counts
from pocketserver.storage.push_counts import MAIN_THREAD
from pocketserver.streams.notifier import Notifier
from pocketserver.streams.token import SyncToken
from pocketserver.sync.sources import SyncContext

log = logging.getLogger(__name__)

DEFAULT_NOTIFICATIONS_LIMIT = 20
MAX_NOTIFICATIONS_LIMIT = 100
SYNC_CATCH_UP_S = 1.0


class _AccountData(Protocol):
    async def set(
        self, user_id: str, room_id: str | None, type_: str, content: Mapping[str, object]
    ) -> None: ...

    async def ignored_users(self, user_id: str) -> frozenset[str]: ...


def _counts(pair: tuple[int, int]) -> dict[str, int]:
    return {"notification_count": pair[0], "highlight_count": pair[1]}


class PushService:
    def __init__(
        self,
        store: RoomStore,
        reader: EventReader,
        notifier: Notifier,
        budget: MemoryBudget,
        server_name: str,
        *,
        account_data: _AccountData | None = None,
    ) -> None:
        """With ``account_data``, rule changes are published as ``m.push_rules`` and
        ignored users never notify. Wire :meth:`add_to_sync` into /sync as a finisher,
        ``evaluator.on_event`` as a room writer listener and ``evaluator.on_receipt``
        as a receipt listener (``services.build_services`` does)."""
        self._account_data = account_data
        self.rules = PushRules(
            store.db, notifier, budget, self._publish if account_data is not None else None
        )
        self.evaluator = PushEvaluator(
            store,
            self.rules,
            server_name,
            budget=budget,
            ignored_users=account_data.ignored_users if account_data is not None else None,
        )
        self._store = store
        self._reader = reader
        self._publish_lock = trio.Lock()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.evaluator.run(task_status=task_status)

    # --- /sync ---------------------------------------------------------------------------

    async def add_to_sync(self, ctx: SyncContext) -> None:
        """Set ``unread_notifications`` (and per-thread counts when the filter asks) on
        every joined room entry of the response; add ``m.push_rules`` when due.

        Waits (at most ``SYNC_CATCH_UP_S``) for the evaluation of the events up to the
        response's own position, so their counts come with them; later events are not
        waited for (their counts come with them in a later response)."""
        position = _events_position(ctx)
        if position is None:
            await self.evaluator.wait_caught_up(SYNC_CATCH_UP_S)
        else:
            await self.evaluator.wait_evaluated(position, SYNC_CATCH_UP_S, ctx.user_id)
        rooms = ctx.body.get("rooms")
        join = rooms.get("join") if isinstance(rooms, dict) else None
        if isinstance(join, dict) and join:
            counts = await self._store.db.read(
                push_counts.counts_for_rooms, ctx.user_id, list(join)
            )
            by_thread = ctx.filter.timeline.unread_thread_notifications
            for room_id, entry in join.items():
                if isinstance(entry, dict):
                    _set_counts(entry, counts.get(room_id, {}), by_thread)
        await self._add_push_rules(ctx)

    async def _add_push_rules(self, ctx: SyncContext) -> None:
        """Add ``m.push_rules`` when due; one already in the response (from the account
        data stream) gets the current rules, so a stored copy never shows stale defaults
        (after an upgrade that changed them)."""
        events = ctx.global_events("account_data")
        present = [e for e in events if isinstance(e, dict) and e.get("type") == "m.push_rules"]
        if present or await self._push_rules_due(ctx):
            content = {"global": await self.rules.ruleset(ctx.user_id)}
            for event in present:
                event["content"] = content
            if not present:
                events.append({"type": "m.push_rules", "content": content})

    async def _publish(self, user_id: str) -> None:
        """Store the user's rules as ``m.push_rules`` account data (its stream wakes
        their syncs). Serialised, and reading the rules inside the lock, so the last
        one stored is the newest."""
        assert self._account_data is not None
        async with self._publish_lock:
            content = {"global": await self.rules.ruleset(user_id)}
            try:
                await self._account_data.set(user_id, None, "m.push_rules", content)
            except MatrixError as e:
                log.warning("cannot publish m.push_rules of %s: %s", user_id, e.error)

    async def _push_rules_due(self, ctx: SyncContext) -> bool:
        flt = replace(ctx.filter.account_data, senders=None, not_senders=(), contains_url=None)
        if not flt.matches({"type": "m.push_rules"}):
            return False
        if ctx.since is None:
            return True
        if self._account_data is not None:
            return False  # changes arrive through the account data stream
        changed = await self.rules.changed_position(ctx.user_id)
        return changed is not None and ctx.since.events <= changed

    # --- GET /notifications ----------------------------------------------------------------

    async def notifications(
        self, user_id: str, from_token: str | None, limit: int | None, only: str | None
    ) -> dict[str, object]:
        """The user's recent notifications, newest first (notifications.yaml).

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a bad ``from`` token or ``limit``.
        """
        before = None
        if from_token is not None:
            if not from_token.isdigit() or len(from_token) > 18:
                raise MatrixError(400, "M_INVALID_PARAM", "invalid from token")
            before = int(from_token)
        if limit is None:
            limit = DEFAULT_NOTIFICATIONS_LIMIT
        limit = max(1, min(limit, MAX_NOTIFICATIONS_LIMIT))
        rows = await self._store.db.read(
            push_counts.recent_notifications, user_id, before, limit, only == "highlight"
        )
        events = await self._reader.get_events(r.event_id for r in rows)
        now_ms = int(time.time() * 1000)
        out: list[dict[str, object]] = []
        for row in rows:
            event = events.get(row.event_id)
            if event is None:
                continue
            out.append(
                {
                    "actions": row.actions,
                    "event": client_event(event, now_ms, include_room_id=False),
                    # Rules have no profile tags since r0: null, as Synapse sends it
                    # (SyTest 61push/09 wants the key; clients take null as absent).
                    "profile_tag": None,
                    "read": row.read,
                    "room_id": row.room_id,
                    "ts": row.ts,
                }
            )
        body: dict[str, object] = {"notifications": out}
        if len(rows) == limit:
            body["next_token"] = str(rows[-1].stream_ordering)
        return body


def _events_position(ctx: SyncContext) -> int | None:
    """The room event stream position the response covers (from its ``next_batch``)."""
    token = ctx.body.get("next_batch")
    if not isinstance(token, str):
        return None
    try:
        return SyncToken.parse(token).events
    except MatrixError:
        return None


def _set_counts(
    entry: dict[str, object], threads: dict[str, tuple[int, int]], by_thread: bool
) -> None:
    if not by_thread:
        total = (sum(n for n, _ in threads.values()), sum(h for _, h in threads.values()))
        entry["unread_notifications"] = _counts(total)
        return
    entry["unread_notifications"] = _counts(threads.get(MAIN_THREAD, (0, 0)))
    others = {t: _counts(c) for t, c in threads.items() if t != MAIN_THREAD}
    if others:
        entry["unread_thread_notifications"] = others
