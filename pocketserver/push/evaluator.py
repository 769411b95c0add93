"""Evaluating push rules for every new event and keeping unread counts.

Spec: client-server-api ``modules/push.md`` "Server behaviour" (rules are processed
for each local user in the room except the sender), "Receiving notifications",
"Marking notifications as read" (receipts, threads: at most 3 relation hops to find
a thread root).

The room writer calls :meth:`PushEvaluator.on_event` after each commit, and the
receipt service :meth:`PushEvaluator.on_receipt`; both only put the item on a
bounded memory channel. :meth:`PushEvaluator.run` takes items off in batches,
evaluates them and applies the results in one write transaction per batch.

When the channel is full (the evaluator is far behind), a new item is dropped,
counted in :meth:`statistics` and logged: the counts of that event's room undercount
until the next read marker resets them. Nothing ever waits on a full channel.

A local user invited by the event is evaluated too (``.m.rule.invite_for_me``), so the
invite shows in their ``GET /notifications``; their join then marks it read.

Evaluation uses the state *before the event* (members, display names, power
levels): the room writer reports the event's state group and whether that state was
the room's current state (``PersistedEvent.at_current``: a live event on top of every
forward extremity, the usual case). Then the room's current state is read, and what
evaluation needs of it (local members with display names, member count, power
levels, create event) is cached per room (byte-bounded, from the memory budget) and
dropped when the room writer reports a change of the room's current state (or a
redaction in the room); an event that changes them is evaluated with what its
predecessors left unless it is processed after the change. A late or forked remote
event reads the facts from its own state group instead (cached by group: a group
never changes), so a user who was a member where the fork began is evaluated even if
they left since. Backfilled events and outliers are never evaluated.
Each event is evaluated for all its local members at once (``push/matching.py``:
conditions shared by their rules are checked once per event).

:meth:`PushEvaluator.wait_evaluated` lets /sync wait for the events up to its own
stream position only, not for everything queued since.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import trio

from pocketserver.cache import LruCache, MemoryBudget
from pocketserver.core.locality import Locality
from pocketserver.core.power_levels import InvalidPowerLevel, get_user_power_level
from pocketserver.core.push_rules import PushContext, notification_power_levels
from pocketserver.core.room_versions import UnsupportedRoomVersion, get_room_version
from pocketserver.push.matching import first_match
from pocketserver.push.rules import PushRules
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.storage import push_counts
from pocketserver.storage import state as state_store
from pocketserver.storage.events import StoredEvent
from pocketserver.storage.push_counts import MAIN_THREAD, Notify, ReadUpTo

log = logging.getLogger(__name__)

CREATE_KEY = ("m.room.create", "")
QUEUE_SIZE = 1000
BATCH = 64
THREAD_HOPS = 3
READ_RECEIPTS = frozenset({"m.read", "m.read.private"})
ROOM_CACHE_SHARE = 0.01
"""Of the memory budget's cache share: the per-room facts evaluation needs."""
TRIM_EVERY = 25
"""A user's recent-notifications list is trimmed after this many new notifications
(so it holds at most ``RECENT_PER_USER + 2 * TRIM_EVERY`` rows, even across restarts)."""
MAX_UNTRIMMED_USERS = 10_000
_MAX_LEVEL = 2**53 - 1
_MAX_SENDERS_REMEMBERED = 64


@dataclass(frozen=True, slots=True)
class _Receipt:
    user_id: str
    room_id: str
    event_id: str
    thread_id: str | None


@dataclass(frozen=True, slots=True)
class EvaluatorStatistics:
    queued: int
    processed: int
    dropped: int
    notifications: int


@dataclass(frozen=True, slots=True)
class _RoomState:
    """The current-state rows evaluation reads from the database."""

    members: list[tuple[str, str]]
    power_levels_id: str | None
    create_id: str | None


def _room_state(conn: sqlite3.Connection, room_id: str) -> _RoomState:
    return _RoomState(
        members=push_counts.joined_members(conn, room_id),
        power_levels_id=state_store.get_current_state_event_id(
            conn, room_id, "m.room.power_levels", ""
        ),
        create_id=state_store.get_current_state_event_id(conn, room_id, "m.room.create", ""),
    )


@dataclass(slots=True)
class EvaluationFacts:
    """What evaluating an event needs of its room's current state (cached per room)."""

    local_members: list[tuple[str, str | None]]
    """``(user_id, display name)`` of each joined local member."""
    member_count: int
    """Every joined member, local or not."""
    power_levels: Mapping[str, object] | None
    create: Mapping[str, object] | None
    size: int
    senders: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)
    """Sender -> (their level, the notification levels): remembered, a few."""

    def sender_levels(self, sender: str) -> tuple[int, dict[str, int]]:
        """The sender's level and the room's ``notifications`` levels for the context."""
        known = self.senders.get(sender)
        if known is None:
            integer_only, level = _levels(sender, self.power_levels, self.create)
            levels = notification_power_levels(self.power_levels, integer_only=integer_only)
            if len(self.senders) >= _MAX_SENDERS_REMEMBERED:
                self.senders.clear()
            known = self.senders[sender] = (level, levels)
        return known


def _levels(
    sender: str,
    pl_content: Mapping[str, object] | None,
    create: Mapping[str, object] | None,
) -> tuple[bool, int]:
    """(integer-only power levels?, the sender's level clamped to an int)."""
    if create is None:
        return True, 0
    try:
        version = get_room_version(str(_content(create).get("room_version", "1")))
        level = get_user_power_level(sender, pl_content, create, room_version=version)
    except (InvalidPowerLevel, UnsupportedRoomVersion, ValueError):
        return True, 0
    clamped = _MAX_LEVEL if level == math.inf else int(level)
    return version.integer_only_power_levels, clamped


def _facts_size(
    local: list[tuple[str, str | None]],
    pl: Mapping[str, object] | None,
    create: Mapping[str, object] | None,
) -> int:
    names = sum(200 + 2 * len(u) + 2 * len(n or "") for u, n in local)
    return 1500 + names + 4 * len(str(pl)) + 4 * len(str(create))


def relation_of(pdu: Mapping[str, object]) -> tuple[str | None, str] | None:
    """``(rel_type, event_id)`` of an event's ``m.relates_to``, if it names an event."""
    content = pdu.get("content")
    relates = content.get("m.relates_to") if isinstance(content, Mapping) else None
    if not isinstance(relates, Mapping):
        return None
    target = relates.get("event_id")
    if not isinstance(target, str):
        return None
    rel_type = relates.get("rel_type")
    return (rel_type if isinstance(rel_type, str) else None), target


def _content(pdu: Mapping[str, object] | None) -> Mapping[str, object]:
    content = pdu.get("content") if pdu is not None else None
    return content if isinstance(content, Mapping) else {}


def _local_invitee(
    pdu: Mapping[str, object], sender: str, is_local: Callable[[str], bool]
) -> str | None:
    """The local user an ``m.room.member`` invite is for (not the sender), if any."""
    target = pdu.get("state_key")
    if (
        pdu.get("type") == "m.room.member"
        and _content(pdu).get("membership") == "invite"
        and isinstance(target, str)
        and target != sender
        and is_local(target)
    ):
        return target
    return None


class PushEvaluator:
    """Owns the evaluation queue and the unread counters; see the module docstring."""

    def __init__(
        self,
        store: RoomStore,
        rules: PushRules,
        server_name: str,
        queue_size: int = QUEUE_SIZE,
        budget: MemoryBudget | None = None,
        ignored_users: Callable[[str], Awaitable[frozenset[str]]] | None = None,
    ) -> None:
        self._store = store
        self._rules = rules
        self._locality = Locality(server_name)
        self._send, self._receive = trio.open_memory_channel[PersistedEvent | _Receipt](queue_size)
        self._rooms: LruCache[str, EvaluationFacts] = (
            budget.cache("push_rooms", ROOM_CACHE_SHARE, lambda f: f.size)
            if budget is not None
            else LruCache("push_rooms", 1 << 20, lambda f: f.size)
        )
        self._rooms_generation = 0  # a load that started before a change is not cached
        # Notifications written per user since their list was last trimmed.
        self._untrimmed: dict[str, int] = {}
        # Stream positions of the queued events not evaluated yet, oldest first.
        self._pending: deque[int] = deque()
        self._enqueued = 0
        self._done = 0
        # User -> queue sequence number of their latest receipt not processed yet.
        self._receipts: dict[str, int] = {}
        self._dropped = 0
        self._notifications = 0
        self._progress = trio.Event()
        self.ignored_users = ignored_users
        """From the account data feature: whose events a user ignores. They never
        notify nor count as unread for that user (client-server API "Ignoring Users":
        the server must not send the user anything from them; Synapse's push
        evaluation skips them too)."""
        self.notification_listeners: list[Callable[[list[Notify]], None]] = []
        self.read_listeners: list[Callable[[list[str]], None]] = []
        """Called (never blocking) with the users whose read receipts a committed batch
        applied: their unread counts may have dropped (badge updates). A user's own
        event also resets their counts but calls no read listener."""
        """Called (sync, must not block) with each batch's notifications once committed."""

    def is_local(self, user_id: str) -> bool:
        return self._locality.is_mine(user_id)

    # --- producers (sync callbacks, never block) -------------------------------------

    def on_event(self, event: PersistedEvent) -> None:
        """Room writer listener: queue a live event for evaluation (never backfill or
        outliers), and forget the facts of its room if it changed the current state."""
        if event.state_changed or event.pdu.get("type") == "m.room.redaction":
            self._rooms_generation += 1
            self._rooms.pop(event.room_id)
        if event.live:
            self._offer(event)

    def on_receipt(
        self,
        user_id: str,
        room_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: str | None,
    ) -> None:
        """Receipt listener: a read receipt of a local user resets their counts up to it."""
        if receipt_type in READ_RECEIPTS and self.is_local(user_id):
            self._offer(_Receipt(user_id, room_id, event_id, thread_id))

    def _offer(self, item: PersistedEvent | _Receipt) -> None:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 100 == 0:
                log.warning("push evaluation queue full: %d item(s) dropped", self._dropped)
            return
        self._enqueued += 1
        if isinstance(item, PersistedEvent):
            self._pending.append(item.stream_ordering)
        else:
            self._receipts[item.user_id] = self._enqueued

    # --- the consumer ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Evaluate queued items until cancelled."""
        task_status.started()
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await self.process(batch)
            except Exception:
                log.exception("push evaluation of %d item(s) failed", len(batch))
            self._done += len(batch)
            for item in batch:
                if isinstance(item, PersistedEvent) and self._pending:
                    self._pending.popleft()
                elif (
                    isinstance(item, _Receipt) and self._receipts.get(item.user_id, 0) <= self._done
                ):
                    del self._receipts[item.user_id]
            self._progress.set()
            self._progress = trio.Event()

    async def process(self, items: list[PersistedEvent | _Receipt]) -> None:
        """Evaluate ``items`` in order and apply the results in one transaction."""
        ops: list[Notify | ReadUpTo] = []
        readers: list[str] = []
        for item in items:
            if isinstance(item, _Receipt):
                receipt_ops = await self._receipt_ops(item)
                ops.extend(receipt_ops)
                readers.extend(op.user_id for op in receipt_ops)
            else:
                ops.extend(await self._event_ops(item))
        if ops:
            await self._store.db.write(push_counts.apply, ops, self._due_for_trim(ops))
            self._notifications += sum(1 for op in ops if isinstance(op, Notify))
            if self.notification_listeners:
                notified = [op for op in ops if isinstance(op, Notify)]
                for listener in self.notification_listeners:
                    listener(notified)
            # Only read receipts tell the read listeners (badge updates), not the reset
            # of a sender's counts by their own event: Synapse sends a badge update
            # from on_new_receipts alone, and a push a gateway does not expect (the
            # user is typing, not reading on another device) holds up that pusher's
            # next one (SyTest 61push: a gateway that answers only what it awaits).
            if readers:
                for read_listener in self.read_listeners:
                    read_listener(list(dict.fromkeys(readers)))

    def _due_for_trim(self, ops: list[Notify | ReadUpTo]) -> set[str]:
        """Users whose recent-notifications lists to trim with this batch: each after
        every ``TRIM_EVERY`` notifications (the lists stay bounded; reads never see
        the extra rows, see ``storage/push_counts.py``)."""
        due: set[str] = set()
        for op in ops:
            if isinstance(op, Notify):
                n = self._untrimmed.get(op.user_id, 0) + 1
                if n >= TRIM_EVERY:
                    due.add(op.user_id)
                    n = 0
                self._untrimmed[op.user_id] = n
        if len(self._untrimmed) > MAX_UNTRIMMED_USERS:
            due.update(self._untrimmed)  # trim everyone tracked, start afresh
            self._untrimmed.clear()
        return due

    async def wait_evaluated(
        self, position: int, timeout_s: float = 1.0, user_id: str | None = None
    ) -> None:
        """Wait until every queued event at or before stream ``position``, and the
        read receipts of ``user_id`` queued before this call, are evaluated and their
        counts committed (or the timeout). Events queued after those are not waited for.

        /sync calls this with the position of its response so that an event's count
        shows in the same response as the event, and the reset by the user's read
        receipt in the first response after it was accepted (push.md "Server
        behaviour").
        """
        receipts = self._receipts.get(user_id, 0) if user_id is not None else 0

        def waiting() -> bool:
            return bool(self._pending and self._pending[0] <= position) or self._done < receipts

        if not waiting():
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(timeout_s):
            while waiting():
                await self._progress.wait()

    async def wait_caught_up(self, timeout_s: float = 1.0) -> None:
        """Wait until everything queued before this call is applied (or the timeout).

        /sync calls this so that an event's count shows in the same response as the
        event (push.md "Server behaviour").
        """
        target = self._enqueued
        if self._done >= target:
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(timeout_s):
            while self._done < target:
                await self._progress.wait()

    def statistics(self) -> EvaluatorStatistics:
        return EvaluatorStatistics(
            queued=self._enqueued - self._done,
            processed=self._done,
            dropped=self._dropped,
            notifications=self._notifications,
        )

    # --- evaluation ----------------------------------------------------------------------

    async def thread_of(self, pdu: Mapping[str, object]) -> str:
        """The thread root an event belongs to, or ``main`` (push.md: at most 3 hops)."""
        current: Mapping[str, object] = pdu
        for _ in range(THREAD_HOPS):
            relation = relation_of(current)
            if relation is None:
                return MAIN_THREAD
            rel_type, target = relation
            if rel_type == "m.thread":
                return target
            parent = await self._store.get_event(target)
            if parent is None:
                return MAIN_THREAD
            current = parent.pdu
        return MAIN_THREAD

    async def _receipt_ops(self, receipt: _Receipt) -> list[Notify | ReadUpTo]:
        event = await self._store.get_event(receipt.event_id)
        if event is None or event.room_id != receipt.room_id:
            return []
        thread = receipt.thread_id
        return [ReadUpTo(receipt.user_id, receipt.room_id, thread, event.stream_ordering)]

    async def facts_for(self, event: PersistedEvent) -> EvaluationFacts:
        """The facts of the state before ``event`` (see the module docstring)."""
        if event.at_current or event.state_before is None:
            return await self.room_facts(event.room_id)
        key = f"group:{event.state_before}"
        cached = self._rooms.get(key)
        if cached is not None:
            return cached
        state = await self._store.group_state(event.state_before)
        members = [(sk, eid) for (t, sk), eid in state.items() if t == "m.room.member"]
        wanted = [eid for _, eid in members]
        wanted += [state[k] for k in (("m.room.power_levels", ""), CREATE_KEY) if k in state]
        events = await self._store.get_events(wanted)
        joined = [
            (user_id, eid)
            for user_id, eid in members
            if eid in events and _content(events[eid].pdu).get("membership") == "join"
        ]
        facts = self._facts(
            joined,
            events,
            state.get(("m.room.power_levels", "")),
            state.get(CREATE_KEY),
        )
        self._rooms.set(key, facts)
        return facts

    def _facts(
        self,
        joined: list[tuple[str, str]],
        events: Mapping[str, StoredEvent],
        power_levels_id: str | None,
        create_id: str | None,
    ) -> EvaluationFacts:
        """Evaluation facts from the joined members ``(user_id, member event ID)`` and
        the events read for them."""
        pl_event = events.get(power_levels_id or "")
        create = events.get(create_id or "")
        members: list[tuple[str, str | None]] = []
        for user_id, member_id in joined:
            if not self.is_local(user_id):
                continue
            member = events.get(member_id)
            name = _content(member.pdu if member else None).get("displayname")
            members.append((user_id, name if isinstance(name, str) else None))
        pl_content = _content(pl_event.pdu) if pl_event else None
        create_pdu = create.pdu if create else None
        return EvaluationFacts(
            local_members=members,
            member_count=len(joined),
            power_levels=pl_content,
            create=create_pdu,
            size=_facts_size(members, pl_content, create_pdu),
        )

    async def room_facts(self, room_id: str) -> EvaluationFacts:
        """The facts of the room's current state that evaluation needs (cached)."""
        cached = self._rooms.get(room_id)
        if cached is not None:
            return cached
        generation = self._rooms_generation
        state = await self._store.db.read(_room_state, room_id)
        local = [(u, eid) for u, eid in state.members if self.is_local(u)]
        wanted = [eid for _, eid in local]
        wanted += [e for e in (state.power_levels_id, state.create_id) if e]
        events = await self._store.get_events(wanted)
        facts = self._facts(local, events, state.power_levels_id, state.create_id)
        facts.member_count = len(state.members)
        if generation == self._rooms_generation:
            self._rooms.set(room_id, facts)
        return facts

    async def _event_ops(self, event: PersistedEvent) -> list[Notify | ReadUpTo]:
        pdu = event.pdu
        sender = pdu.get("sender")
        if not isinstance(sender, str):
            return []
        thread = await self.thread_of(pdu)
        ops: list[Notify | ReadUpTo] = []
        if self.is_local(sender):
            # Sending an event marks the sender's thread as read up to it.
            ops.append(ReadUpTo(sender, event.room_id, thread, event.stream_ordering))
        facts = await self.facts_for(event)
        targets = [(u, name) for u, name in facts.local_members if u != sender]
        invitee = _local_invitee(pdu, sender, self.is_local)
        if invitee is not None:  # not joined, but their rules decide (.m.rule.invite_for_me)
            name = _content(pdu).get("displayname")
            targets.append((invitee, name if isinstance(name, str) else None))
        if targets and self.ignored_users is not None:
            targets = [(u, n) for u, n in targets if sender not in await self.ignored_users(u)]
        if not targets:
            return ops
        sender_level, levels = facts.sender_levels(sender)
        rules = await self._rules.compiled_for_many([u for u, _ in targets])
        memo: dict[object, bool] = {}
        now_ms = int(time.time() * 1000)
        for user_id, name in targets:

            def context(user_id: str = user_id, name: str | None = name) -> PushContext:
                return PushContext(
                    user_id=user_id,
                    user_display_name=name,
                    room_member_count=facts.member_count,
                    sender_power_level=sender_level,
                    notification_power_levels=levels,
                )

            matched = first_match(rules[user_id], pdu, context, name, memo)
            if matched is None or not matched.notify:
                continue
            ops.append(
                Notify(
                    user_id=user_id,
                    room_id=event.room_id,
                    thread_id=thread,
                    stream_ordering=event.stream_ordering,
                    event_id=event.event_id,
                    actions=matched.rule.effective_actions,
                    highlight=matched.highlight,
                    ts=now_ms,
                    actions_json=matched.actions_json,
                )
            )
        return ops
