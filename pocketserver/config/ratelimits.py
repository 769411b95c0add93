"""The rc_* limits on room actions (Synapse's key names and defaults), read by
``loader.parse_config``.

Synapse's meaning (synapse/config/ratelimiting.py and where each is used):

- ``rc_joins.local``: joins of local users to rooms this server is in, per user;
  ``rc_joins.remote``: joins through another server (not offered here yet).
- ``rc_joins_per_room``: joins to one room, from anyone; a join is refused while
  the room's bucket is empty, and every join that happens fills it.
- ``rc_invites.per_room`` / ``per_user`` (the invitee) / ``per_issuer``.
- ``rc_room_creation``: createRoom and room upgrades, per user.
- ``rc_media_create``: ``POST /_matrix/media/v1/create``, per user.
- ``rc_presence.per_user``: presence changes (``PUT /presence``, ``/sync``'s
  ``set_presence``), per user.
- ``rc_admin_redaction``: when set, a redaction of someone else's event is limited
  by it instead of ``rc_message``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from pocketserver.config.model import RateLimit, RoomRateLimits

T = TypeVar("T")

# Synapse's default for a section given without values (RatelimitSettings.parse).
_SECTION_DEFAULT = RateLimit(0.17, 3)


class Section(Protocol):
    def get(self, key: str, conv: Callable[[object], T], default: object) -> T: ...
    def section(self, key: str) -> Section: ...
    def has(self, key: str) -> bool: ...
    def finish(self, ignored: frozenset[str] = ...) -> None: ...


def _positive_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError("expected a positive number")
    return float(value)


def _burst(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ValueError("expected a whole number from 1 to 1000000")
    return value


def _limit(sec: Section, default: RateLimit) -> RateLimit:
    limit = RateLimit(
        per_second=sec.get("per_second", _positive_float, default.per_second),
        burst_count=sec.get("burst_count", _burst, default.burst_count),
    )
    sec.finish()
    return limit


def parse_room_rate_limits(root: Section) -> RoomRateLimits:
    """Read ``rc_joins``, ``rc_joins_per_room``, ``rc_invites``, ``rc_room_creation``,
    ``rc_media_create``, ``rc_presence`` and ``rc_admin_redaction`` of ``root``."""
    d = RoomRateLimits()
    joins = root.section("rc_joins")
    local = _limit(joins.section("local"), d.joins_local)
    remote = _limit(joins.section("remote"), d.joins_remote)
    joins.finish()
    invites = root.section("rc_invites")
    per_room = _limit(invites.section("per_room"), d.invites_per_room)
    per_user = _limit(invites.section("per_user"), d.invites_per_user)
    per_issuer = _limit(invites.section("per_issuer"), d.invites_per_issuer)
    invites.finish()
    presence = root.section("rc_presence")
    presence_per_user = _limit(presence.section("per_user"), d.presence_per_user)
    presence.finish()
    admin_redaction = None
    if root.has("rc_admin_redaction"):
        admin_redaction = _limit(root.section("rc_admin_redaction"), _SECTION_DEFAULT)
    return RoomRateLimits(
        joins_local=local,
        joins_remote=remote,
        joins_per_room=_limit(root.section("rc_joins_per_room"), d.joins_per_room),
        invites_per_room=per_room,
        invites_per_user=per_user,
        invites_per_issuer=per_issuer,
        room_creation=_limit(root.section("rc_room_creation"), d.room_creation),
        media_create=_limit(root.section("rc_media_create"), d.media_create),
        presence_per_user=presence_per_user,
        admin_redaction=admin_redaction,
    )
