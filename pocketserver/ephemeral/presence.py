"""Presence (client-server API "Presence"): online, unavailable, offline.

In memory only, for local users, in a bounded LRU (:data:`MAX_USERS`); a user the
server has forgotten is offline, as is everyone after a restart until they sync.
What a user *is* comes lazily from a few timestamps, with no per-user timers:

- ``offline`` if they said so, or if no /sync of theirs is running and none
  finished (and they did nothing) for :data:`SYNC_TIMEOUT_MS`;
- ``unavailable`` if they said so, or if they said ``online`` but did nothing for
  :data:`IDLE_MS` (sending events, typing, receipts and ``PUT .../status`` count);
- ``online`` otherwise, ``currently_active`` while their last action is younger
  than :data:`CURRENTLY_ACTIVE_MS`.

A change of what others see advances the ``presence`` stream (positions: see
``clock.py``). :meth:`PresenceService.run` looks at the users who are not offline
every :data:`SWEEP_S` seconds, so that timeouts reach /sync. Listeners
(:meth:`PresenceService.add_listener`; the federation sender) hear of every change of
what others see of one of *our* users, and again every :data:`ANNOUNCE_EVERY_MS`
while the user is not offline (server-server-api.md "Presence": the servers sharing a
room with them time them out otherwise, as Synapse does). With presence disabled
in the config everything is a no-op: ``PUT`` is accepted and stores nothing, ``GET``
answers offline and /sync carries no presence (as Synapse does).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from pocketserver.ephemeral.clock import StreamClock, wall_ms
from pocketserver.storage import presence as presence_store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier
from pocketserver.sync.sources import SyncContext

ONLINE = "online"
UNAVAILABLE = "unavailable"
OFFLINE = "offline"
STATES = (ONLINE, UNAVAILABLE, OFFLINE)

IDLE_MS = 5 * 60 * 1000
SYNC_TIMEOUT_MS = 30 * 1000
CURRENTLY_ACTIVE_MS = 60 * 1000
SWEEP_S = 10.0
REMOTE_TIMEOUT_MS = 30 * 60 * 1000
"""A remote user is offline when their server said nothing of them for this long
(Synapse's FEDERATION_TIMEOUT; its servers resend presence every 25 minutes)."""
ANNOUNCE_EVERY_MS = 25 * 60 * 1000
"""Our users who are not offline are announced again this often (Synapse's
FEDERATION_PING_INTERVAL, below the other side's 30 minute timeout)."""
MAX_USERS = 2_000
MAX_STATUS_MSG = 1_024
"""Characters; a longer status message is refused (it is kept in memory)."""


@dataclass(slots=True)
class _UserPresence:
    presence: str = OFFLINE
    """As last set by the user or their /sync; what others see is derived from it."""
    status_msg: str | None = None
    last_active_ms: int = 0
    last_sync_ms: int = 0
    syncing: int = 0
    shown: tuple[str, bool, str | None] = (OFFLINE, False, None)
    remote_until_ms: int = 0
    """For a user of another server: what their server last said holds until then
    (then they are offline); 0 for our own users."""
    remote_active: bool = False
    announced_ms: int = 0
    """For our own users: when listeners last heard of them."""


@dataclass(frozen=True, slots=True)
class PresenceView:
    presence: str
    last_active_ago: int | None = None
    currently_active: bool = False
    status_msg: str | None = None

    def to_edu(self, user_id: str) -> dict[str, object]:
        """One ``push`` entry of an ``m.presence`` EDU (server-server-api.md
        "Presence"): the event content with ``user_id``."""
        return {"user_id": user_id, **self.to_json()}

    def to_json(self) -> dict[str, object]:
        """The ``GET .../status`` body and the ``m.presence`` event content."""
        body: dict[str, object] = {"presence": self.presence}
        if self.last_active_ago is not None:
            body["last_active_ago"] = self.last_active_ago
        if self.presence == ONLINE:
            body["currently_active"] = self.currently_active
        if self.status_msg is not None:
            body["status_msg"] = self.status_msg
        return body


PresenceListener = Callable[[str, PresenceView], None]
"""``(user_id, view)``: what others see of one of our users changed (or is announced
again); never blocks."""


@dataclass(frozen=True, slots=True)
class PresenceStatistics:
    users: int
    not_offline: int
    position: int


def _view(st: _UserPresence, now_ms: int) -> PresenceView:
    ago = max(now_ms - st.last_active_ms, 0) if st.last_active_ms else None
    if st.remote_until_ms:
        if now_ms > st.remote_until_ms:
            return PresenceView(OFFLINE, ago, False, st.status_msg)
        return PresenceView(st.presence, ago, st.remote_active, st.status_msg)
    presence = st.presence
    idle_since = max(st.last_sync_ms, st.last_active_ms)
    if presence != OFFLINE and st.syncing == 0 and now_ms - idle_since > SYNC_TIMEOUT_MS:
        presence = OFFLINE
    elif presence == ONLINE and now_ms - st.last_active_ms > IDLE_MS:
        presence = UNAVAILABLE
    active = presence == ONLINE and now_ms - st.last_active_ms < CURRENTLY_ACTIVE_MS
    return PresenceView(presence, ago, active, st.status_msg)


class PresenceService:
    """The ``presence`` stream, ``/presence/{userId}/status`` and /sync's ``set_presence``."""

    stream = "presence"

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        *,
        enabled: bool = True,
        max_users: int = MAX_USERS,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self._db = db
        self._notifier = notifier
        self.enabled = enabled
        self._max_users = max_users
        self._now_ms = now_ms
        self._users: OrderedDict[str, _UserPresence] = OrderedDict()
        self._live: set[str] = set()  # users others see as not offline
        self._clock = StreamClock(max_users, now_ms)
        self._listeners: list[PresenceListener] = []
        if enabled:
            notifier.notify_stream(self.stream, self._clock.position)  # where it starts

    def add_listener(self, listener: PresenceListener) -> None:
        """Call ``listener`` whenever what others see of one of our users changes, and
        every :data:`ANNOUNCE_EVERY_MS` while they are not offline. Other servers'
        users are never passed on (their own server speaks for them)."""
        self._listeners.append(listener)

    # --- state -------------------------------------------------------------------------

    def _get(self, user_id: str) -> _UserPresence:
        st = self._users.get(user_id)
        if st is None:
            st = self._users[user_id] = _UserPresence()
            while len(self._users) > self._max_users:
                forgotten, _ = self._users.popitem(last=False)
                self._live.discard(forgotten)
        else:
            self._users.move_to_end(user_id)
        return st

    def _refresh(self, user_id: str, st: _UserPresence) -> None:
        """Advance the stream if what others see of the user has changed."""
        now = self._now_ms()
        view = _view(st, now)
        shown = (view.presence, view.currently_active, view.status_msg)
        if shown == st.shown:
            if view.presence != OFFLINE and now - st.announced_ms >= ANNOUNCE_EVERY_MS:
                self._announce(user_id, st, view, now)
            return
        st.shown = shown
        if view.presence == OFFLINE:
            self._live.discard(user_id)
        else:
            self._live.add(user_id)
        self._notifier.notify_stream(self.stream, self._clock.advance((user_id,)))
        self._announce(user_id, st, view, now)

    def _announce(self, user_id: str, st: _UserPresence, view: PresenceView, now: int) -> None:
        if st.remote_until_ms:
            return  # another server's user: their server tells the others
        st.announced_ms = now
        for listener in self._listeners:
            listener(user_id, view)

    def set_state(self, user_id: str, presence: str, status_msg: str | None) -> None:
        """``PUT /presence/{userId}/status``: ``presence`` is one of :data:`STATES`."""
        if not self.enabled:
            return
        st = self._get(user_id)
        st.presence = presence
        st.status_msg = status_msg
        st.last_active_ms = self._now_ms()
        self._refresh(user_id, st)

    def set_remote(
        self,
        user_id: str,
        presence: str,
        status_msg: str | None,
        last_active_ago: int | None,
        currently_active: bool,
    ) -> None:
        """An ``m.presence`` EDU from the user's own server (server-server-api.md
        "Presence"): shown as given until :data:`REMOTE_TIMEOUT_MS` passes without news.
        The caller checked that the sending server is the user's."""
        if not self.enabled or presence not in STATES:
            return
        now = self._now_ms()
        st = self._get(user_id)
        st.presence = presence
        st.status_msg = status_msg[:MAX_STATUS_MSG] if status_msg else None
        st.last_active_ms = now - max(last_active_ago or 0, 0)
        st.remote_active = currently_active and presence == ONLINE
        st.remote_until_ms = now + REMOTE_TIMEOUT_MS
        self._refresh(user_id, st)

    def bump_active(self, user_id: str) -> None:
        """The user did something (sent an event, typed, sent a receipt): they are
        active, and online again if they were unavailable. Users the server does not
        track (they never synced or set presence) stay untracked."""
        st = self._users.get(user_id) if self.enabled else None
        if st is None or st.remote_until_ms:
            return  # untracked, or another server's user: their server tells us
        st.last_active_ms = self._now_ms()
        if st.presence == UNAVAILABLE:
            st.presence = ONLINE
        self._refresh(user_id, st)

    @asynccontextmanager
    async def syncing(self, user_id: str, set_presence: str) -> AsyncIterator[None]:
        """Around a /sync request: the user counts as connected while it runs.

        ``set_presence`` (the /sync parameter): ``online`` brings an offline user
        online, ``unavailable`` marks them idle, ``offline`` changes nothing.
        """
        if not self.enabled or set_presence == OFFLINE:
            yield
            return
        st = self._get(user_id)
        now = self._now_ms()
        seen = _view(st, now).presence
        if set_presence == ONLINE and seen == OFFLINE:
            st.presence = ONLINE
            st.last_active_ms = now
        elif set_presence == UNAVAILABLE and seen != UNAVAILABLE:
            st.presence = UNAVAILABLE
        st.syncing += 1
        st.last_sync_ms = now
        self._refresh(user_id, st)
        try:
            yield
        finally:
            st.syncing = max(st.syncing - 1, 0)
            st.last_sync_ms = self._now_ms()

    def get(self, user_id: str) -> PresenceView:
        """What others see of the user now (offline if presence is disabled)."""
        st = self._users.get(user_id) if self.enabled else None
        if st is None:
            return PresenceView(OFFLINE)
        return _view(st, self._now_ms())

    async def can_see(self, viewer: str, user_id: str) -> bool:
        """Presence is visible to the user themself and to users sharing a room."""
        if viewer == user_id:
            await trio.lowlevel.checkpoint()
            return True
        shared = await self._db.read(presence_store.users_sharing_a_room, viewer, [user_id])
        return user_id in shared

    def sweep(self) -> None:
        """Advance the stream for every user whose timeouts changed what others see."""
        for user_id in list(self._live):
            st = self._users.get(user_id)
            if st is None:
                self._live.discard(user_id)
            else:
                self._refresh(user_id, st)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self.enabled:
            return
        while True:
            await trio.sleep(SWEEP_S)
            self.sweep()

    # --- sync --------------------------------------------------------------------------

    def position(self) -> int:
        return self._clock.position

    async def add_to_sync(self, ctx: SyncContext, since: int | None, upto: int) -> bool:
        """``m.presence`` events of the users sharing a room with ``ctx.user_id`` whose
        presence changed in ``(since, upto]``; everyone not offline for an initial
        sync, a token from another process, or when rooms are newly joined; and the
        current presence of users who newly joined a room the user is in."""
        if not self.enabled:
            await trio.lowlevel.checkpoint()
            return False
        if since is None or not self._clock.knows(since):
            candidates = set(self._live)
        else:
            candidates = set(self._clock.changed_between(since, upto))
            if ctx.new_rooms:
                candidates |= self._live
            # Users who just started sharing a room with this one: their current
            # presence, offline included, as Synapse sends its "newly joined" users'
            # (SyTest 31sync/03joined.pl expects it of users who never set any).
            candidates |= ctx.newly_joined_users
        candidates = {
            u
            for u in candidates
            if ctx.filter.presence.matches({"type": "m.presence", "sender": u})
        }
        if not candidates:
            await trio.lowlevel.checkpoint()
            return False
        others = candidates - {ctx.user_id}
        visible = (
            await self._db.read(presence_store.users_sharing_a_room, ctx.user_id, others)
            if others
            else set()
        )
        if ctx.user_id in candidates:
            visible.add(ctx.user_id)
        events = ctx.global_events("presence")
        for user_id in sorted(visible):
            events.append(
                {"type": "m.presence", "sender": user_id, "content": self.get(user_id).to_json()}
            )
        return bool(visible)

    def changed_between(self, since: int, upto: int) -> set[str] | None:
        """Users whose presence others see changed in ``(since, upto]``; None when the
        position is too old (or from another process) to tell."""
        if not self._clock.knows(since):
            return None
        return set(self._clock.changed_between(since, upto))

    def statistics(self) -> PresenceStatistics:
        return PresenceStatistics(len(self._users), len(self._live), self._clock.position)
