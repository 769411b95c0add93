"""The cache of remote users' device lists, kept fresh by their servers' EDUs.

Spec: server-server-api.md "Device Management" and the ``m.signing_key_update`` EDU
("End-to-End Encryption"). We track a remote user while they share a room with one of
our users (at most :data:`MAX_TRACKED_USERS`); a tracked list is filled from
``GET /user/devices/{userId}`` (a *resync*) and then updated by each
``m.device_list_update`` whose ``prev_id`` we recognise: the stream ID we hold, or one
we applied lately (as Synapse, whose clustered senders may name several). An update
with an unknown or empty ``prev_id`` marks the list stale and resyncs it in the
background; while stale, queries go to the user's server. Updates about users who
share no room with ours are ignored (their server should not be sending them). Lists
no longer shared are forgotten by :meth:`RemoteDeviceLists.sweep`.

Every change is written to our device list stream in the same transaction, so our
users hear of it in ``/sync``'s ``device_lists.changed`` and ``/keys/changes``.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from pocketserver.e2e.stream import DeviceListStream
from pocketserver.federation.e2e import parsing
from pocketserver.federation.e2e.requests import FederationRequests, user_devices_path
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.storage import e2e_keys as key_store
from pocketserver.storage import remote_devices as store
from pocketserver.storage.db import Database

log = logging.getLogger(__name__)

MAX_TRACKED_USERS = 20_000
"""Remote users whose lists are cached (each a few KB on disk); past this, queries for
others go to their servers every time."""
RESYNC_QUEUE = 1000
RESYNC_WORKERS = 4
RESYNC_TIMEOUT_S = 30.0
QUERY_RESYNCS = 100
"""Users whose lists one client ``/keys/query`` resyncs at once (the others go to
``/user/keys/query``)."""
RETRY_INTERVAL_S = 60.0
"""Stale lists (a failed resync) are retried this often, a few at a time."""
RETRY_BATCH = 50
SWEEP_INTERVAL_S = 600.0
LEFT_QUEUE = 256
"""Leaves waiting for their lists to be forgotten; past it the periodic sweep does."""
SWEEP_BATCH = 500
SEEN_USERS = 10_000
SEEN_PER_USER = 16
SERVER_QUIET_S = 300.0
"""A server whose resync failed is not retried by the periodic retry for this long
(an update it sends still triggers one: it is up again)."""
FAILED_SERVERS = 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class DeviceListStatistics:
    tracked_cap: int
    queued_resyncs: int
    resyncs_done: int
    resyncs_failed: int


class RemoteDeviceLists:
    """Inbound device list and signing key EDUs, resyncs, and the tracked set."""

    def __init__(
        self,
        db: Database,
        stream: DeviceListStream,
        client: FederationRequests | None,
        *,
        max_tracked: int = MAX_TRACKED_USERS,
    ) -> None:
        self.db = db
        self.stream = stream
        self.client = client
        self.max_tracked = max_tracked
        self._send, self._receive = trio.open_memory_channel[str](RESYNC_QUEUE)
        self._queued: set[str] = set()
        self._seen: OrderedDict[str, set[str]] = OrderedDict()
        self._done = 0
        self._failed = 0
        self._server_failed_at: OrderedDict[str, float] = OrderedDict()
        self._query_limiter = trio.CapacityLimiter(RESYNC_WORKERS)
        self._left_in, self._left_out = trio.open_memory_channel[tuple[str, str]](LEFT_QUEUE)

    def statistics(self) -> DeviceListStatistics:
        return DeviceListStatistics(self.max_tracked, len(self._queued), self._done, self._failed)

    # --- EDUs ------------------------------------------------------------------------------

    async def on_device_list_update(self, origin: str, content: Mapping[str, object]) -> None:
        """Handle an ``m.device_list_update`` EDU from the authenticated ``origin``.

        Malformed updates and updates about users of another server or users who share
        no room with ours are ignored (logged); nothing changes then.
        """
        update = parsing.device_list_update(origin, content)
        if update is None:
            log.info("ignored a malformed or foreign m.device_list_update from %s", origin)
            return
        seen = frozenset(self._seen.get(update.user_id, ()))
        outcome, position = await self.db.write(
            _apply_update_txn, update, seen, _now_ms(), self.max_tracked
        )
        if position is not None:
            self.stream.committed(position)
        if outcome == "applied":
            self._remember(update.user_id, update.stream_id)
        elif outcome == "resync":
            self.request_resync(update.user_id)
        else:
            log.debug("ignored a device list update for %s: no shared room", update.user_id)

    async def on_signing_key_update(self, origin: str, content: Mapping[str, object]) -> None:
        """Handle ``m.signing_key_update`` (and ``org.matrix.signing_key_update``): a
        user's new master and/or self-signing key. A user-signing key is never taken."""
        user_id = parsing.user_of(origin, content.get("user_id"))
        if user_id is None:
            log.info("ignored a malformed or foreign signing key update from %s", origin)
            return
        keys = {
            usage: checked
            for usage, field in (("master", "master_key"), ("self_signing", "self_signing_key"))
            if (checked := parsing.cross_signing_key(user_id, usage, content.get(field)))
        }
        if not keys:
            return
        outcome, position = await self.db.write(
            _apply_signing_keys_txn, user_id, keys, _now_ms(), self.max_tracked
        )
        if position is not None:
            self.stream.committed(position)
        if outcome == "resync":
            self.request_resync(user_id)

    def _remember(self, user_id: str, stream_id: str) -> None:
        ids = self._seen.setdefault(user_id, set())
        self._seen.move_to_end(user_id)
        if len(ids) >= SEEN_PER_USER:
            ids.clear()
        ids.add(stream_id)
        while len(self._seen) > SEEN_USERS:
            self._seen.popitem(last=False)

    # --- tracking and resyncs ----------------------------------------------------------------

    async def track(self, user_ids: list[str]) -> None:
        """Start tracking those of ``user_ids`` who share a room with our users and are
        not tracked yet (a client asked for their keys); their resyncs are queued."""
        new = await self.db.write(_track_txn, user_ids, _now_ms(), self.max_tracked)
        for user_id in new:
            self.request_resync(user_id)

    def request_resync(self, user_id: str) -> None:
        """Queue a resync of ``user_id``'s list (never blocks). A full queue drops it:
        the list stays stale and the periodic retry picks it up."""
        if user_id in self._queued:
            return
        try:
            self._send.send_nowait(user_id)
        except trio.WouldBlock:
            return
        self._queued.add(user_id)

    async def resync_now(self, user_ids: list[str], timeout_s: float) -> set[str]:
        """Resync at once, for a client's ``/keys/query`` naming all their devices, the
        lists of those of ``user_ids`` who share a room with our users (they are
        tracked from now on); return those whose list is now fresh.

        As Synapse (``_query_devices_for_destination``): a user whose list is not
        cached is fetched whole with ``GET /user/devices`` (spec: server-server-api.md
        "Device Management", a *resync*), so the cache is filled and the answer comes
        from it; ``/user/keys/query`` is left for the others. At most
        :data:`QUERY_RESYNCS` per query, :data:`RESYNC_WORKERS` at a time."""
        tracked = await self.db.write(
            _track_shared_txn, user_ids[:QUERY_RESYNCS], _now_ms(), self.max_tracked
        )
        fresh: set[str] = set()

        async def one(user_id: str) -> None:
            async with self._query_limiter:
                if await self.resync(user_id, timeout_s=timeout_s):
                    fresh.add(user_id)

        with trio.move_on_after(timeout_s):
            async with trio.open_nursery() as nursery:
                for user_id in tracked:
                    nursery.start_soon(one, user_id)
        return fresh

    async def resync(self, user_id: str, *, timeout_s: float = RESYNC_TIMEOUT_S) -> bool:
        """Fetch ``user_id``'s whole list from their server and store it; True if the
        cache is now fresh. A failure leaves it stale."""
        if self.client is None:
            return False
        server = user_id.split(":", 1)[1]
        try:
            answer = await self.client.get_json(
                server, user_devices_path(user_id), timeout_s=timeout_s
            )
        except Exception as e:
            log.info("could not resync the device list of %s: %s", user_id, e)
            self._failed += 1
            self._server_failed_at[server] = trio.current_time()
            self._server_failed_at.move_to_end(server)
            if len(self._server_failed_at) > FAILED_SERVERS:
                self._server_failed_at.popitem(last=False)
            return False
        checked = parsing.user_devices_answer(user_id, answer)
        if checked is None:
            log.info("%s sent a malformed device list for %s", server, user_id)
            self._failed += 1
            return False
        self._server_failed_at.pop(server, None)
        fresh, position = await self.db.write(_resync_txn, user_id, checked, _now_ms())
        if position is not None:
            self.stream.committed(position)
        self._seen[user_id] = {checked.stream_id}
        self._done += 1
        return fresh

    async def sweep(self) -> int:
        """Forget the lists of users who no longer share a room with ours; return how
        many (at most :data:`SWEEP_BATCH` per call)."""
        # Found by a read (it may scan big rooms), confirmed and removed by a short write.
        candidates = await self.db.read(store.no_longer_shared, SWEEP_BATCH)
        gone = await self.db.write(_sweep_txn, candidates) if candidates else []
        for user_id in gone:
            self._seen.pop(user_id, None)
        return len(gone)

    def on_persisted(self, event: PersistedEvent) -> None:
        """Room writer listener (never blocks): a member left or was banned, so some
        lists may be shared no more. They are forgotten at once (not at the next
        sweep): a list that is not shared gets no updates, so after a rejoin it must be
        fetched again (SyTest 40devicelists "resyncs when server leaves and rejoins a
        room"; Synapse likewise stops tracking users it shares no room with)."""
        pdu = event.pdu
        content = pdu.get("content")
        target = pdu.get("state_key")
        if (
            not event.live
            or not event.state_changed
            or pdu.get("type") != "m.room.member"
            or not isinstance(content, dict)
            or content.get("membership") not in ("leave", "ban")
            or not isinstance(target, str)
        ):
            return
        with contextlib.suppress(trio.WouldBlock):
            self._left_in.send_nowait((event.room_id, target))

    async def _forget_left(self) -> None:
        async for room_id, target in self._left_out:
            try:
                candidates = await self.db.read(store.tracked_after_leave, room_id, target)
                gone = await self.db.write(_sweep_txn, candidates) if candidates else []
                for user_id in gone:
                    self._seen.pop(user_id, None)
            except Exception:
                log.exception("forgetting the device lists of %s's room %s failed", target, room_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resync queued lists, retry stale ones and sweep, until cancelled."""
        async with trio.open_nursery() as nursery:
            for _ in range(RESYNC_WORKERS):
                nursery.start_soon(self._worker)
            nursery.start_soon(self._forget_left)
            task_status.started()
            swept_at = trio.current_time()
            while True:
                await trio.sleep(RETRY_INTERVAL_S)
                try:
                    await self.retry_stale()
                    if trio.current_time() - swept_at >= SWEEP_INTERVAL_S:
                        swept_at = trio.current_time()
                        await self.sweep()
                except Exception:
                    log.exception("device list maintenance failed")

    async def retry_stale(self) -> None:
        """Queue resyncs of stale lists, except on servers that failed lately."""
        now = trio.current_time()
        for user_id in await self.db.read(store.stale_users, RETRY_BATCH):
            failed_at = self._server_failed_at.get(user_id.split(":", 1)[1])
            if failed_at is None or now - failed_at >= SERVER_QUIET_S:
                self.request_resync(user_id)

    async def _worker(self) -> None:
        async for user_id in self._receive:
            self._queued.discard(user_id)
            try:
                await self.resync(user_id)
            except Exception:
                log.exception("resync of %s failed", user_id)


def _start_tracking(conn: sqlite3.Connection, user_id: str, now_ms: int, cap: int) -> bool:
    if store.tracked_count(conn) >= cap:
        return False
    store.track(conn, user_id, now_ms)
    return True


def _apply_update_txn(
    conn: sqlite3.Connection,
    update: parsing.DeviceUpdate,
    seen: frozenset[str],
    now_ms: int,
    cap: int,
) -> tuple[str, int | None]:
    """("applied" | "resync" | "ignored", device list stream position if changed)."""
    user_id = update.user_id
    if not store.shares_room_with_local(conn, user_id):
        return "ignored", None
    tracked = store.get_user(conn, user_id)
    if tracked is None:
        return ("resync" if _start_tracking(conn, user_id, now_ms, cap) else "ignored"), None
    known = seen | {tracked.stream_id}
    if tracked.stale or not update.prev_ids or any(p not in known for p in update.prev_ids):
        store.mark_stale(conn, user_id)
        return "resync", None
    if update.deleted:
        store.delete_device(conn, user_id, update.device_id)
    else:
        store.set_device(conn, user_id, update.device)
    store.set_synced(conn, user_id, update.stream_id, now_ms)
    # Our users hear of every update their server sends, even one that changes nothing
    # we keep (a renamed device while names are not shared over federation): the
    # device changed, so clients refetch (as Synapse, which notifies per update).
    return "applied", key_store.record_change(conn, user_id)


def _set_cross_signing(
    conn: sqlite3.Connection, user_id: str, keys: Mapping[str, tuple[str, dict[str, object]]]
) -> bool:
    stored = key_store.cross_signing_keys(conn, [user_id]).get(user_id, {})
    changed = False
    for usage, (public_key, key) in keys.items():
        if usage in stored and stored[usage].key == key:
            continue
        key_store.set_cross_signing_key(conn, user_id, usage, public_key, key)
        changed = True
    return changed


def _apply_signing_keys_txn(
    conn: sqlite3.Connection,
    user_id: str,
    keys: Mapping[str, tuple[str, dict[str, object]]],
    now_ms: int,
    cap: int,
) -> tuple[str, int | None]:
    if not store.shares_room_with_local(conn, user_id):
        return "ignored", None
    outcome = "applied"
    if store.get_user(conn, user_id) is None:
        if not _start_tracking(conn, user_id, now_ms, cap):
            return "ignored", None
        outcome = "resync"  # the devices are not known yet
    changed = _set_cross_signing(conn, user_id, keys)
    return outcome, key_store.record_change(conn, user_id) if changed else None


def _track_txn(conn: sqlite3.Connection, user_ids: list[str], now_ms: int, cap: int) -> list[str]:
    new = []
    for user_id in user_ids:
        if store.get_user(conn, user_id) is not None:
            continue
        if store.shares_room_with_local(conn, user_id) and _start_tracking(
            conn, user_id, now_ms, cap
        ):
            new.append(user_id)
    return new


def _track_shared_txn(
    conn: sqlite3.Connection, user_ids: list[str], now_ms: int, cap: int
) -> list[str]:
    """Those of ``user_ids`` who share a room with our users and are tracked (already,
    or from now on if the cap allows)."""
    out = []
    for user_id in user_ids:
        if not store.shares_room_with_local(conn, user_id):
            continue
        if store.get_user(conn, user_id) is not None or _start_tracking(conn, user_id, now_ms, cap):
            out.append(user_id)
    return out


def _resync_txn(
    conn: sqlite3.Connection, user_id: str, found: parsing.DeviceList, now_ms: int
) -> tuple[bool, int | None]:
    """Store a fetched list (if the user is still shared and tracked)."""
    tracked = store.get_user(conn, user_id)
    if tracked is None:
        return False, None
    if not store.shares_room_with_local(conn, user_id):
        store.untrack(conn, user_id)
        return False, None
    changed = False
    if found.devices is not None:
        changed = store.replace_devices(conn, user_id, found.devices)
    keys = {}
    if found.master is not None:
        keys["master"] = found.master
    if found.self_signing is not None:
        keys["self_signing"] = found.self_signing
    changed |= _set_cross_signing(conn, user_id, keys)
    # A list that moved on (another stream ID) changed for our users even when what we
    # keep of it did not (as Synapse, which notifies after every resync).
    changed |= tracked.stream_id != found.stream_id
    store.set_synced(conn, user_id, found.stream_id, now_ms)
    return True, key_store.record_change(conn, user_id) if changed else None


def _sweep_txn(conn: sqlite3.Connection, candidates: list[str]) -> list[str]:
    gone = [u for u in candidates if not store.shares_room_with_local(conn, u)]
    for user_id in gone:
        store.untrack(conn, user_id)
    return gone
