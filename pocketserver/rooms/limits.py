"""Rate limits on room actions, with Synapse's meaning (config/ratelimits.py):
joins (per user and per room), invites (per room, invitee and inviter), room
creation, and moderators' redactions.

Each limiter is keyed by user or room ID and bounded (ratelimit.py: least recently
used keys are forgotten past ``max_keys``). As in Synapse, server admins are not
exempt; only actions the server takes itself (the creator's join and the invites of
createRoom, guests made to leave, upgrades' own events) are not limited.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import trio

from pocketserver.config.model import RoomRateLimits
from pocketserver.errors import MatrixError
from pocketserver.ratelimit import RateLimiter, take_all
from pocketserver.rooms.writer import PersistedEvent


class RoomActionLimits:
    def __init__(
        self, limits: RoomRateLimits, *, exempt: Callable[[Hashable], bool] | None = None
    ) -> None:
        """``exempt``: users never limited (by the limiters keyed by user ID)."""
        self.joins_local = RateLimiter(limits.joins_local, exempt=exempt)
        self.joins_per_room = RateLimiter(limits.joins_per_room)
        self.invites_per_room = RateLimiter(limits.invites_per_room)
        self.invites_per_user = RateLimiter(limits.invites_per_user)
        self.invites_per_issuer = RateLimiter(limits.invites_per_issuer, exempt=exempt)
        self.room_creation = RateLimiter(limits.room_creation, exempt=exempt)
        self.admin_redaction = (
            RateLimiter(limits.admin_redaction) if limits.admin_redaction is not None else None
        )

    def check_join(self, user_id: str, room_id: str) -> None:
        """A local user joins a room they are not joined to: ``rc_joins.local`` for the
        user, and the room's ``rc_joins_per_room`` bucket must not be empty (it is
        filled by the joins that happen, :meth:`on_persisted`), as Synapse.

        Raises:
            MatrixError: 429 ``M_LIMIT_EXCEEDED``.
        """
        now = trio.current_time()
        if not self.joins_per_room.would_allow(room_id, now):
            self.joins_per_room.check(room_id, now)
        self.joins_local.check(user_id, now)

    def check_invite(self, issuer: str, room_id: str, invitee: str) -> None:
        """``rc_invites``: per room, per invitee and per inviter; all or nothing.

        Raises:
            MatrixError: 429 ``M_LIMIT_EXCEEDED``.
        """
        take_all(
            trio.current_time(),
            (self.invites_per_room, room_id),
            (self.invites_per_user, invitee),
            (self.invites_per_issuer, issuer),
        )

    def check_invite_count(self, count: int) -> None:
        """createRoom's ``invite`` list: more than one room's burst at once is refused
        before anything is made (400, Synapse's "Cannot invite so many users at once").
        """
        if count > self.invites_per_room.limit.burst_count:
            raise MatrixError(400, "M_UNKNOWN", "Cannot invite so many users at once")

    def check_room_creation(self, user_id: str) -> None:
        """``rc_room_creation``: createRoom and room upgrades, per user.

        Raises:
            MatrixError: 429 ``M_LIMIT_EXCEEDED``.
        """
        self.room_creation.check(user_id, trio.current_time())

    def on_persisted(self, event: PersistedEvent) -> None:
        """Writer listener: every live join fills its room's ``rc_joins_per_room``."""
        if event.pdu.get("type") != "m.room.member" or not event.live:
            return
        content = event.pdu.get("content")
        if isinstance(content, Mapping) and content.get("membership") == "join":
            self.joins_per_room.record(event.room_id, trio.current_time())
