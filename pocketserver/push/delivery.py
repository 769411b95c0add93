"""Sending notifications to push gateways (push gateway API ``POST /_matrix/push/v1/notify``).

The push evaluator hands over each batch of notifications after committing it
(:meth:`PushDelivery.on_notifications`, a sync call that never blocks). One task
(:meth:`PushDelivery.run`) takes batches off a bounded channel, looks up the users'
pushers and appends a small reference (event ID, room, actions) to a bounded queue
per pusher. A pusher with work has one sender task, which ends when its queue is
empty: an idle pusher costs no task and no memory.

A sender posts one notification at a time (the body is built when it is first sent,
with the user's unread count then) and retries a network error, a timeout, 429 or
5xx with exponential backoff (``base_delay_s`` doubling up to ``max_delay_s``, at
most ``max_attempts`` tries); then, or on another 4xx, the notification is dropped
with a log line. A pushkey the gateway lists as ``rejected`` deletes its pusher.
When a queue (or all queues together) is full, the oldest waiting notification is
dropped with a log line. Pending notifications are kept in memory only: a restart
loses them (the event is still in the user's /sync and /notifications).

The server POSTs to whatever URL a user registered, so every new connection to a
gateway is checked (:func:`pocketserver.net.transport.guarded_transport`): its host
name is resolved here, every address must pass ``ip_range_blacklist`` /
``ip_range_whitelist``, and the connection goes to a checked address. A refused
gateway fails its notification at once (no retry), with one log line per pusher.
"""

from __future__ import annotations

import enum
import json
import logging
import sqlite3
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio

if TYPE_CHECKING:
    import httpx

from pocketserver.config.model import DEFAULT_IP_RANGE_BLACKLIST
from pocketserver.core.pushers import (
    EVENT_ID_ONLY,
    KIND_HTTP,
    PusherKey,
    RoomFacts,
    badge_notification,
    device_entry,
    notification,
    stripped_room_facts,
    tweaks_of,
)
from pocketserver.net.addresses import (
    AddressBlocked,
    AddressPolicy,
    Resolver,
    outbound_policy,
    system_resolver,
)
from pocketserver.net.backoff import Backoff
from pocketserver.rooms.reading import EventReader
from pocketserver.storage import out_of_band as oob_store
from pocketserver.storage import pushers as store
from pocketserver.storage import state as state_store
from pocketserver.storage.db import Database
from pocketserver.storage.push_counts import Notify

log = logging.getLogger(__name__)

INTAKE_BATCHES = 256
QUEUE_PER_PUSHER = 32
MAX_QUEUED = 2000
MAX_RESPONSE_BYTES = 64 * 1024
TIMEOUT_S = 60.0
"""A gateway's answer may take a while (Sygnal waits on APNs/FCM): a push is retried
only after 60 s without one, as Synapse's pusher client waits; a shorter wait sent a
second copy of a push the gateway was still handling."""
MAX_CONNECTIONS = 128
"""Requests in flight to gateways at once (each pusher has at most one): enough that
pushers whose gateway hangs (up to ``TIMEOUT_S`` each) do not hold up the others, as a
pool of 8 did; Synapse's pusher client has no such limit at all."""
MAX_BLOCKED_LOGGED = 1024


@dataclass(frozen=True, slots=True)
class PendingPush:
    event_id: str
    room_id: str
    actions: tuple[object, ...]

    @property
    def badge_only(self) -> bool:
        """No event: an update of the unread count (after the user read something)."""
        return not self.event_id


BADGE = PendingPush("", "", ())


@dataclass(frozen=True, slots=True)
class _Read:
    """The user's read receipts were applied: their unread count may have dropped."""

    user_id: str


@dataclass(frozen=True, slots=True)
class DeliveryStatistics:
    queued: int
    active_pushers: int
    sent: int
    retries: int
    dropped: int
    rejected: int
    blocked: int = 0
    """Notifications not sent because the gateway's address is not allowed."""


class _Outcome(enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class _Answer:
    outcome: _Outcome
    rejected: tuple[str, ...] = ()
    detail: str = ""


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _room_facts_ids(
    conn: sqlite3.Connection, room_id: str, sender: str
) -> tuple[str | None, str | None, str | None]:
    get = state_store.get_current_state_event_id
    return (
        get(conn, room_id, "m.room.name", ""),
        get(conn, room_id, "m.room.canonical_alias", ""),
        get(conn, room_id, "m.room.member", sender),
    )


def _content_str(pdu: Mapping[str, object] | None, key: str) -> str | None:
    content = pdu.get("content") if pdu is not None else None
    value = content.get(key) if isinstance(content, Mapping) else None
    return value if isinstance(value, str) and value else None


class PushDelivery:
    """Bounded per-pusher queues and their sender tasks; see the module docstring."""

    def __init__(
        self,
        db: Database,
        reader: EventReader,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        policy: AddressPolicy | None = None,
        resolver: Resolver = system_resolver,
        queue_per_pusher: int = QUEUE_PER_PUSHER,
        max_queued: int = MAX_QUEUED,
        base_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        max_attempts: int = 10,
    ) -> None:
        self._db = db
        self._reader = reader
        self._transport = transport
        self.policy = policy or outbound_policy(DEFAULT_IP_RANGE_BLACKLIST, ())
        """Which gateway addresses are allowed (``transport``, a test double, bypasses it)."""
        self._resolver = resolver
        self._queue_per_pusher = queue_per_pusher
        self._max_queued = max_queued
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._max_attempts = max_attempts
        self._intake_send, self._intake = trio.open_memory_channel[list[Notify | _Read]](
            INTAKE_BATCHES
        )
        self._last_badge: dict[PusherKey, int] = {}
        """The unread count each pusher's gateway was last sent (a badge update is sent
        only when it changed); at most ``MAX_QUEUED`` entries."""
        self._queues: dict[PusherKey, deque[PendingPush]] = {}
        self._queued = 0
        self._sent = 0
        self._retries = 0
        self._dropped = 0
        self._rejected = 0
        self._blocked = 0
        self._blocked_logged: set[PusherKey] = set()
        self._nursery: trio.Nursery | None = None
        self._client: httpx.AsyncClient | None = None
        self._users: set[str] = set()
        """Users who may have a pusher (a superset: loaded at start, grows on set), so
        that a batch for users without pushers costs no database read."""

    # --- producers (sync, never block) -------------------------------------------------

    def on_notifications(self, notified: Sequence[Notify]) -> None:
        """Evaluator listener: queue a committed batch of notifications."""
        if not notified:
            return
        try:
            self._intake_send.send_nowait(list(notified))
        except trio.WouldBlock:
            self._drop(len(notified), "push delivery intake full")

    def on_read(self, users: Sequence[str]) -> None:
        """Evaluator listener: read receipts of ``users`` were applied (never blocks)."""
        reads = [_Read(u) for u in users if u in self._users]
        if not reads:
            return
        try:
            self._intake_send.send_nowait(list(reads))
        except trio.WouldBlock:
            self._drop(len(reads), "push delivery intake full")

    def add_user(self, user_id: str) -> None:
        """``user_id`` has set a pusher."""
        self._users.add(user_id)

    def pusher_set(self, key: PusherKey) -> None:
        """The pusher was set again (maybe to another URL): log a refused gateway anew."""
        self._blocked_logged.discard(key)

    def forget(self, key: PusherKey) -> None:
        """The pusher is gone: drop what waits for it (its sender stops)."""
        self._blocked_logged.discard(key)
        self._last_badge.pop(key, None)
        queue = self._queues.pop(key, None)
        if queue is not None:
            self._queued -= len(queue)
            queue.clear()

    def statistics(self) -> DeliveryStatistics:
        return DeliveryStatistics(
            queued=self._queued,
            active_pushers=len(self._queues),
            sent=self._sent,
            retries=self._retries,
            dropped=self._dropped,
            rejected=self._rejected,
            blocked=self._blocked,
        )

    def _drop(self, count: int, why: str) -> None:
        """Count dropped notifications; log the first and then one line per hundred."""
        before = self._dropped
        self._dropped += count
        if before == 0 or before // 100 != self._dropped // 100:
            log.warning("%s: %d notification(s) dropped (%d in all)", why, count, self._dropped)

    # --- the dispatcher ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dispatch queued notifications to their pushers until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._users.update(await self._db.read(store.users_with_pushers))
                task_status.started()
                async for batch in self._intake:
                    try:
                        await self._dispatch(batch)
                    except Exception:
                        log.exception("dispatching %d notification(s) failed", len(batch))
        finally:
            if self._client is not None:
                with trio.CancelScope(shield=True):
                    await self._client.aclose()

    def _http(self) -> httpx.AsyncClient:
        """The gateway client, made on first use: a server without pushers never imports
        httpx (several MB of RSS on a small host)."""
        if self._client is None:
            import httpx

            from pocketserver.net.transport import guarded_transport

            transport = self._transport or guarded_transport(
                self.policy, self._resolver, max_connections=MAX_CONNECTIONS
            )
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(TIMEOUT_S),
                follow_redirects=False,
                trust_env=False,
                transport=transport,
            )
        return self._client

    async def _dispatch(self, batch: list[Notify | _Read]) -> None:
        users = list(dict.fromkeys(n.user_id for n in batch if n.user_id in self._users))
        if not users:
            return
        found = await self._db.read(store.pushers_for_users, users)
        by_user: dict[str, list[PusherKey]] = {}
        for pusher in found:
            if pusher.kind == KIND_HTTP:
                by_user.setdefault(pusher.user_id, []).append(pusher.key)
        for note in batch:
            for key in by_user.get(note.user_id, ()):
                if isinstance(note, _Read):
                    queue = self._queues.get(key)
                    if not (queue and queue[-1].badge_only):  # one waiting update is enough
                        self._enqueue(key, BADGE)
                else:
                    item = PendingPush(note.event_id, note.room_id, tuple(note.actions))
                    self._enqueue(key, item)

    def _enqueue(self, key: PusherKey, item: PendingPush) -> None:
        assert self._nursery is not None
        queue = self._queues.get(key)
        if queue is None:
            queue = deque()
            self._queues[key] = queue
            self._nursery.start_soon(self._sender, key, queue)
        if len(queue) >= self._queue_per_pusher or self._queued >= self._max_queued:
            if not queue:
                self._drop(1, f"push queues full ({self._queued})")
                return
            queue.popleft()
            self._queued -= 1
            self._drop(1, f"push queue of {key.user_id}'s {key.app_id} pusher full")
        queue.append(item)
        self._queued += 1

    async def _sender(self, key: PusherKey, queue: deque[PendingPush]) -> None:
        try:
            while queue and self._queues.get(key) is queue:
                item = queue.popleft()
                self._queued -= 1
                try:
                    await self._deliver(key, item, queue)
                except Exception:
                    log.exception("push to %s's %s pusher failed", key.user_id, key.app_id)
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]

    # --- one notification --------------------------------------------------------------

    async def _deliver(self, key: PusherKey, item: PendingPush, queue: deque[PendingPush]) -> None:
        pusher = await self._db.read(store.get_pusher, key)
        if pusher is None:
            return
        url = pusher.data.get("url")
        if not isinstance(url, str):
            return
        built = await self._build(pusher, item)
        if built is None:
            return
        body, unread = built
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        backoff = Backoff(self._base_delay_s, self._max_delay_s)
        delay = backoff.minimum
        for attempt in range(1, self._max_attempts + 1):
            answer = await self._post(url, payload)
            if answer.outcome is _Outcome.SENT:
                self._sent += 1
                if len(self._last_badge) >= MAX_QUEUED:
                    self._last_badge.clear()
                self._last_badge[key] = unread
                if key.pushkey in answer.rejected:
                    await self._reject(key)
                return
            if answer.outcome is _Outcome.FAILED:
                self._drop(1, f"push gateway {_host(url)} refused ({answer.detail})")
                return
            if answer.outcome is _Outcome.BLOCKED:
                self._on_blocked(key, url, answer.detail)
                return
            if attempt == self._max_attempts:
                break
            self._retries += 1
            log.info("push gateway %s: %s; retrying in %.0fs", _host(url), answer.detail, delay)
            await trio.sleep(delay)
            delay = backoff.next(delay)
            if (
                self._queues.get(key) is not queue
                or await self._db.read(store.get_pusher, key) is None
            ):
                return  # deleted while we waited
        self._drop(1, f"push gateway {_host(url)} failed {self._max_attempts} times")

    def _on_blocked(self, key: PusherKey, url: str, detail: str) -> None:
        """Count a notification for a gateway that is not allowed; log once per pusher."""
        self._blocked += 1
        if key in self._blocked_logged:
            return
        if len(self._blocked_logged) >= MAX_BLOCKED_LOGGED:
            self._blocked_logged.clear()
        self._blocked_logged.add(key)
        log.warning(
            "push gateway %s of %s's %s pusher blocked: %s (see ip_range_blacklist and"
            " ip_range_whitelist); its notifications are dropped",
            _host(url),
            key.user_id,
            key.app_id,
            detail,
        )

    async def _reject(self, key: PusherKey) -> None:
        self._rejected += 1
        await self._db.write(store.delete_pusher, key)
        self.forget(key)
        log.info("push gateway rejected %s's %s pushkey: pusher deleted", key.user_id, key.app_id)

    async def _post(self, url: str, payload: bytes) -> _Answer:
        import httpx

        client = self._http()
        headers = {"Content-Type": "application/json"}
        try:
            with trio.fail_after(2 * TIMEOUT_S):  # a gateway answering byte by byte
                async with client.stream("POST", url, content=payload, headers=headers) as r:
                    raw = bytearray()
                    async for chunk in r.aiter_bytes():
                        raw += chunk
                        if len(raw) > MAX_RESPONSE_BYTES:
                            break
                    status = r.status_code
        except AddressBlocked as e:
            return _Answer(_Outcome.BLOCKED, detail=str(e))
        except (httpx.HTTPError, trio.TooSlowError) as e:
            return _Answer(_Outcome.RETRY, detail=type(e).__name__)
        if status == 429 or status >= 500:
            return _Answer(_Outcome.RETRY, detail=f"HTTP {status}")
        if not 200 <= status < 300:
            return _Answer(_Outcome.FAILED, detail=f"HTTP {status}")
        return _Answer(_Outcome.SENT, rejected=_rejected_pushkeys(bytes(raw)))

    async def _build(
        self, pusher: store.StoredPusher, item: PendingPush
    ) -> tuple[dict[str, object], int] | None:
        """The body to send and the unread count in it; None: nothing to send."""
        if item.badge_only:
            unread = await self._db.read(store.unread_total, pusher.user_id)
            if self._last_badge.get(pusher.key, -1) == unread:
                return None  # the gateway has this count already
            device = device_entry(pusher.app_id, pusher.pushkey, pusher.pushkey_ts, pusher.data, {})
            return badge_notification(unread, device), unread
        event = (await self._reader.get_events([item.event_id])).get(item.event_id)
        if event is None:
            return None
        unread = await self._db.read(store.unread_total, pusher.user_id)
        event_id_only = pusher.data.get("format") == EVENT_ID_ONLY
        sender = event.pdu.get("sender")
        facts = RoomFacts()
        if not event_id_only and isinstance(sender, str):
            stripped = await self._out_of_band_facts(pusher.user_id, item.event_id, event.pdu)
            facts = stripped or await self._room_facts(item.room_id, sender)
        device = device_entry(
            pusher.app_id, pusher.pushkey, pusher.pushkey_ts, pusher.data, tweaks_of(item.actions)
        )
        body = notification(
            user_id=pusher.user_id,
            pdu=event.pdu,
            event_id=item.event_id,
            room_id=item.room_id,
            unread=unread,
            device=device,
            event_id_only=event_id_only,
            room=facts,
        )
        return body, unread

    async def _out_of_band_facts(
        self, user_id: str, event_id: str, pdu: Mapping[str, object]
    ) -> RoomFacts | None:
        """The facts of the user's invite or knock in a room we do not hold (its stripped
        state; the room's state here is empty), or None for any other event."""
        room_id = pdu.get("room_id")
        if pdu.get("type") != "m.room.member" or not isinstance(room_id, str):
            return None
        found = await self._db.read(oob_store.get, user_id, room_id)
        if found is None or found.event_id != event_id:
            return None
        return stripped_room_facts(pdu, found.stripped_state)

    async def _room_facts(self, room_id: str, sender: str) -> RoomFacts:
        name_id, alias_id, member_id = await self._db.read(_room_facts_ids, room_id, sender)
        wanted = [e for e in (name_id, alias_id, member_id) if e]
        events = await self._reader.get_events(wanted) if wanted else {}

        def pdu(event_id: str | None) -> Mapping[str, object] | None:
            event = events.get(event_id or "")
            return event.pdu if event is not None else None

        name = _content_str(pdu(name_id), "name")
        alias = _content_str(pdu(alias_id), "alias")
        return RoomFacts(
            # A room without a name is named by its canonical alias, as Synapse's
            # calculate_room_name does (and SyTest 61push expects): gateways such as
            # Sygnal show room_name only.
            room_name=name or alias,
            room_alias=alias,
            sender_display_name=_content_str(pdu(member_id), "displayname"),
        )


def _rejected_pushkeys(raw: bytes) -> tuple[str, ...]:
    try:
        body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ()
    rejected = body.get("rejected") if isinstance(body, dict) else None
    if not isinstance(rejected, list):
        return ()
    return tuple(k for k in rejected if isinstance(k, str))
