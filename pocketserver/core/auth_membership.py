"""Authorisation rules for ``m.room.member`` events.

Spec rule numbers: rule 5 in ``fragments/v1-auth-rules.md`` (v1, v2) and
``v3-auth-rules.md`` (v3-v5); rule 4 in ``v6.md``/``v7.md``, ``v8-auth-rules.md``
(v8, v9), ``v10.md`` and ``v11.md``; rule 5 in ``v12.md``. Sub-rule numbers below
use the v8+ numbering (x.3 join, x.4 invite, x.5 leave, x.6 ban, x.7 knock, x.8
unknown); v1-v7 have no x.2, so there join is x.2, invite x.3, leave x.4, ban x.5,
(v7) knock x.6 and unknown membership x.6 (v7: x.7).

Rule x.2 (v8+: the event must be signed by the server of
``join_authorised_via_users_server``) is a signature check and is left to the
caller, like every signature check (CORE_API.md).
"""

from __future__ import annotations

from collections.abc import Callable

from pocketserver.core.auth_context import AuthContext, AuthError, as_map, as_str, domain_of
from pocketserver.core.auth_shape import create_event_id, edge_ids
from pocketserver.core.auth_thirdparty import check_third_party_invite
from pocketserver.core.room_versions import RoomVersion

__all__ = ["check_membership"]

JOIN, INVITE, LEAVE, BAN, KNOCK = "join", "invite", "leave", "ban", "knock"


def _is_creator_first_join(ctx: AuthContext, target: str) -> bool:
    """Rule x.3.1: "the only previous event is an ``m.room.create`` and the state_key
    is the creator" (v11+: the create event's sender; v12 not additional creators)."""
    prev = edge_ids(ctx.version, ctx.event, "prev_events")
    if len(prev) != 1:
        return False
    if ctx.version.implicit_room_creator:
        creator = as_str(ctx.create.get("sender"))
    else:
        creator = as_str(as_map(ctx.create.get("content")).get("creator"))
    return creator == target and prev[0] == create_event_id(ctx.version, ctx.create)


def _check_target_federation(ctx: AuthContext, target: str) -> None:
    """Synapse also refuses a member event whose *target* is on another server than
    the room creator's when ``m.federate`` is not true (spec rule 3 only checks the
    sender). Followed for interoperability (CORE_API.md)."""
    creating = domain_of(as_str(ctx.create.get("sender")) or "")
    if (
        domain_of(target) != creating
        and as_map(ctx.create.get("content")).get("m.federate", True) is not True
    ):
        raise AuthError("federate", "the room is not federated (Synapse: target's server)")


def _join(ctx: AuthContext, target: str, levels: _Levels) -> None:
    """Rule x.3 (join), after x.3.1."""
    if ctx.sender != target:
        raise AuthError("member.join.not_self", "sender is not the state_key (x.3.2)")
    current = ctx.membership(target)
    if current == BAN:
        raise AuthError("member.join.banned", "the sender is banned (x.3.3)")
    rule = ctx.join_rule()
    version = ctx.version
    if rule == "public":  # x.3.6
        return
    if rule == INVITE or (version.knocking and rule == KNOCK):  # x.3.4
        if current in (INVITE, JOIN):
            return
        raise AuthError("member.join.not_invited", "not invited to this room (x.3.4)")
    if (version.restricted_join_rule and rule == "restricted") or (
        version.knock_restricted_join_rule and rule == "knock_restricted"
    ):  # x.3.5 (v8+; knock_restricted v10+)
        if current in (INVITE, JOIN):
            return
        via = ctx.content.get("join_authorised_via_users_server")
        if not isinstance(via, str) or ctx.membership(via) != JOIN:
            raise AuthError("member.join.restricted", "authorising user not joined (x.3.5.2)")
        if ctx.user_level(via) < levels.invite:
            raise AuthError("member.join.restricted", "authorising user cannot invite (x.3.5.2)")
        return
    raise AuthError("member.join.rule", f"join rule {rule!r} does not allow joining (x.3.7)")


def _invite(ctx: AuthContext, target: str, levels: _Levels) -> None:
    """Rule x.4 (invite)."""
    if "third_party_invite" in ctx.content:
        check_third_party_invite(ctx, target)  # x.4.1
        return
    if ctx.membership(ctx.sender) != JOIN:
        raise AuthError("member.invite.sender", "the sender is not joined (x.4.2)")
    if ctx.membership(target) in (JOIN, BAN):
        raise AuthError("member.invite.target", "the target is joined or banned (x.4.3)")
    if levels.sender < levels.invite:
        raise AuthError("member.invite.level", "sender is below the invite level (x.4.4)")


def _leave(ctx: AuthContext, target: str, levels: _Levels) -> None:
    """Rule x.5 (leave, kick, unban)."""
    sender_membership = ctx.membership(ctx.sender)
    if ctx.sender == target:  # x.5.1 (knock: v7+)
        allowed = (INVITE, JOIN, KNOCK) if ctx.version.knocking else (INVITE, JOIN)
        if sender_membership in allowed:
            return
        raise AuthError("member.leave.self", "cannot leave without being in the room (x.5.1)")
    if sender_membership != JOIN:
        raise AuthError("member.leave.sender", "the sender is not joined (x.5.2)")
    if ctx.membership(target) == BAN and levels.sender < levels.ban:
        raise AuthError("member.leave.unban", "sender is below the ban level (x.5.3)")
    if levels.sender >= ctx.named_level("kick") and levels.target < levels.sender:
        return  # x.5.4
    raise AuthError("member.leave.kick", "sender cannot kick the target (x.5.5)")


def _ban(ctx: AuthContext, target: str, levels: _Levels) -> None:
    """Rule x.6 (ban)."""
    if ctx.membership(ctx.sender) != JOIN:
        raise AuthError("member.ban.sender", "the sender is not joined (x.6.1)")
    if levels.sender >= levels.ban and levels.target < levels.sender:
        return  # x.6.2
    raise AuthError("member.ban.level", "sender cannot ban the target (x.6.3)")


def _knock(ctx: AuthContext, target: str, levels: _Levels) -> None:
    """Rule x.7 (knock, v7+; ``knock_restricted`` v10+)."""
    rule = ctx.join_rule()
    if rule != KNOCK and not (
        ctx.version.knock_restricted_join_rule and rule == "knock_restricted"
    ):
        raise AuthError("member.knock.rule", f"join rule {rule!r} does not allow knocking (x.7.1)")
    if ctx.sender != target:
        raise AuthError("member.knock.not_self", "sender is not the state_key (x.7.2)")
    if ctx.membership(ctx.sender) in (BAN, INVITE, JOIN):
        raise AuthError("member.knock.state", "banned, invited or joined users cannot knock")


class _Levels:
    """The levels Synapse reads up front for every membership change.

    Synapse computes the sender's and target's levels and the invite and ban levels
    before looking at the membership, so an unparseable value among them rejects
    any membership change; we do the same for interoperability.
    """

    __slots__ = ("ban", "invite", "sender", "target")

    def __init__(self, ctx: AuthContext, target: str) -> None:
        self.sender = ctx.user_level(ctx.sender)
        self.target = ctx.user_level(target)
        self.invite = ctx.named_level("invite")
        self.ban = ctx.named_level("ban")


_Handler = Callable[[AuthContext, str, _Levels], None]
_HANDLERS: dict[str, _Handler] = {
    JOIN: _join,
    INVITE: _invite,
    LEAVE: _leave,
    BAN: _ban,
    KNOCK: _knock,
}


def _handler(version: RoomVersion, membership: object) -> _Handler:
    if not isinstance(membership, str) or (membership == KNOCK and not version.knocking):
        raise AuthError("member.unknown", f"unknown membership {membership!r} (x.8)")
    handler = _HANDLERS.get(membership)
    if handler is None:
        raise AuthError("member.unknown", f"unknown membership {membership!r} (x.8)")
    return handler


def check_membership(ctx: AuthContext) -> None:
    """Rules for an ``m.room.member`` event; returning means allow.

    Args:
        ctx: The member event and the state it is checked against.

    Raises:
        AuthError: The membership change is rejected.
    """
    target = ctx.state_key
    if target is None or "membership" not in ctx.content:
        raise AuthError("member.shape", "no state_key or no content.membership (x.1)")
    membership = ctx.content["membership"]
    if membership == JOIN and _is_creator_first_join(ctx, target):
        return  # x.3.1
    _check_target_federation(ctx, target)
    handler = _handler(ctx.version, membership)
    handler(ctx, target, _Levels(ctx, target))
