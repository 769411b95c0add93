"""Event authorisation rules for room versions 1-12.

Spec: the "Authorization rules" section of each room version:
``content/rooms/fragments/v1-auth-rules.md`` (v1, v2), ``v3-auth-rules.md`` (v3-v5),
the inline rules of ``v6.md`` (no ``m.room.aliases`` rule, ``notifications``) and
``v7.md`` (knocking), ``v8-auth-rules.md`` (v8, v9: restricted joins), and the inline
rules of ``v10.md`` (``knock_restricted``, integer-only power levels), ``v11.md``
(creator = sender of the create event) and ``v12.md`` (room ID = create event ID,
create event never cited, creators with infinite power).

This module holds the entry points and the rules for non-membership events; the
create event and auth event shape rules are in :mod:`.auth_shape`, membership in
:mod:`.auth_membership` (3pid invites in :mod:`.auth_thirdparty`) and power levels
in :mod:`.auth_power`.

Nothing here verifies signatures or hashes (the caller does, before auth), and
whether an auth event was itself rejected (rule 2.3) is the caller's knowledge:
rejected events must never be passed in.
"""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.core.auth_context import (
    CREATE_KEY,
    AuthContext,
    AuthError,
    Pdu,
    StateMap,
    as_map,
    as_str,
    domain_of,
)
from pocketserver.core.auth_membership import check_membership
from pocketserver.core.auth_power import check_power_levels_event
from pocketserver.core.auth_shape import (
    auth_types_for_version,
    check_auth_events_shape,
    check_create_event,
    check_room_id_is_create,
    event_fields,
)
from pocketserver.core.room_versions import RoomVersion, UnsupportedRoomVersion, get_room_version

__all__ = ["AuthError", "auth_types_for_event", "check_auth", "check_auth_against_state"]


def _version(room_version: object) -> RoomVersion:
    if not isinstance(room_version, str):
        raise AuthError("room_version", f"room version {room_version!r} is not a string")
    try:
        return get_room_version(room_version)
    except UnsupportedRoomVersion as exc:
        raise AuthError("room_version", str(exc)) from None


def _state_map(auth_events: object) -> StateMap:
    """Check that every entry of the mapping is a PDU under its own (type, state_key)."""
    if not isinstance(auth_events, Mapping):
        raise AuthError("auth_events.malformed", "auth_events is not a mapping")
    for key, pdu in auth_events.items():
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
            raise AuthError("auth_events.malformed", f"bad auth_events key {key!r}")
        if not isinstance(pdu, Mapping) or (pdu.get("type"), pdu.get("state_key")) != key:
            raise AuthError("auth_events.malformed", f"auth event under {key} is not that event")
    return auth_events


def _check_non_member(ctx: AuthContext) -> None:
    """v1 rules 6-11 (v6-v11: 5-9, v12: 6-10) for events other than membership."""
    if ctx.membership(ctx.sender) != "join":
        raise AuthError("sender.not_joined", "the sender is not joined (v1 rule 6)")
    if ctx.type == "m.room.third_party_invite":  # v1 rule 7
        if ctx.user_level(ctx.sender) >= ctx.named_level("invite"):
            return
        raise AuthError("third_party_invite.level", "sender is below the invite level (rule 7)")
    # v1 rule 8: Synapse reads the required level before the sender's level.
    if ctx.send_level() > ctx.user_level(ctx.sender):
        raise AuthError("send.level", "sender is below the event's required level (rule 8)")
    if ctx.state_key is not None and ctx.state_key.startswith("@") and ctx.state_key != ctx.sender:
        raise AuthError("state_key.user", "state_key names another user (v1 rule 9)")
    if ctx.type == "m.room.power_levels":  # v1 rule 10
        check_power_levels_event(ctx)
    if ctx.type == "m.room.redaction":
        _check_redaction(ctx)


def _check_redaction(ctx: AuthContext) -> None:
    """v1/v2 rule 11: redaction needs the redact level or the same event ID domain.

    From v3 the rule is gone ("Handling redactions" decides instead). Synapse still
    reads the redact level for every redaction, so an unparseable value rejects;
    we do the same for interoperability.
    """
    at_redact_level = ctx.user_level(ctx.sender) >= ctx.named_level("redact")
    if not ctx.version.event_ids_in_pdu or at_redact_level:
        return
    redacts = ctx.event.get("redacts")
    if not isinstance(redacts, str):
        return  # Synapse allows it (nothing to redact); the spec text would reject
    own_id = as_str(ctx.event.get("event_id"))
    if own_id is None or domain_of(own_id) != domain_of(redacts):
        raise AuthError("redaction.level", "below the redact level, other server (rule 11)")


def _check(room_version: object, event: object, auth_events: object, *, shape: bool) -> None:
    version = _version(room_version)
    fields = event_fields(event)
    if not isinstance(event, Mapping):  # pragma: no cover - event_fields checked it
        raise AuthError("format", "event is not an object")
    etype, sender, state_key, content = fields
    if etype == "m.room.create":  # rule 1
        check_create_event(version, event, sender)
        return
    state = _state_map(auth_events)
    if shape:  # rule 2 (v12: 3)
        check_auth_events_shape(version, event, fields, state)
    create = state.get(CREATE_KEY)
    if create is None:
        raise AuthError("auth_events.no_create", "no m.room.create event")
    check_room_id_is_create(version, event, create)  # v12 rule 2
    ctx = AuthContext(version, event, etype, sender, state_key, content, state, create)
    # rule 3 (v12: 4). Synapse treats any m.federate other than literal true as false.
    creating = domain_of(as_str(create.get("sender")) or "")
    if (
        domain_of(sender) != creating
        and as_map(create.get("content")).get("m.federate", True) is not True
    ):
        raise AuthError("federate", "the room is not federated (rule 3)")
    if version.special_case_aliases_auth and etype == "m.room.aliases":  # v1-v5 rule 4
        if not state_key or state_key != domain_of(sender):
            raise AuthError("aliases.state_key", "state_key is not the sender's domain (4)")
        return
    if etype == "m.room.member":
        check_membership(ctx)
        return
    _check_non_member(ctx)


def check_auth(
    room_version: str,
    event: Mapping[str, object],
    auth_events: Mapping[tuple[str, str], Mapping[str, object]],
) -> None:
    """Check an event against the authorisation rules of its room version.

    ``auth_events`` maps (type, state_key) to the PDU of each event ``event``
    cites in its ``auth_events`` (v12: plus the create event under
    ``("m.room.create", "")``). The rules about those auth events themselves
    (rule 2; v12 rule 3) are checked: duplicates, unexpected types, a missing
    create event, other rooms, and in v12 a cited create event.

    State resolution's iterative auth checks may pass instead the events *for the
    auth event types* taken from the partial state, falling back to the event's own
    auth events (rooms/v2.md "Iterative auth checks"): every cited event's key must
    then be present (it may hold a newer event), and no key outside
    :func:`auth_types_for_event` may be. Use :func:`check_auth_against_state` to
    check against an arbitrary state map.

    Args:
        room_version: The room version identifier.
        event: The PDU (federation format of its version; ``event_id`` optional v3+).
        auth_events: The auth events, keyed by (type, state_key).

    Raises:
        AuthError: The event is rejected (the only exception raised on any input).
    """
    _check(room_version, event, auth_events, shape=True)


def check_auth_against_state(
    room_version: str,
    event: Mapping[str, object],
    state: Mapping[tuple[str, str], Mapping[str, object]],
) -> None:
    """Check the state-dependent rules only, against any state map.

    Like :func:`check_auth` without rule 2 (v12: 3) on the event's own
    ``auth_events``; extra entries in ``state`` are ignored. This is what Synapse's
    ``check_state_dependent_auth_rules`` checks (plus rule 1 and v12 rule 2).

    Args:
        room_version: The room version identifier.
        event: The PDU.
        state: Room state (at least the entries for :func:`auth_types_for_event`
            and the create event), keyed by (type, state_key).

    Raises:
        AuthError: The event is rejected (the only exception raised on any input).
    """
    _check(room_version, event, state, shape=False)


def auth_types_for_event(room_version: str, event: Mapping[str, object]) -> list[tuple[str, str]]:
    """Return the (type, state_key) pairs a new event should cite in ``auth_events``.

    Spec: server-server-api.md "Auth events selection": the create event (not in
    v12), the power levels, the sender's member event; for member events also the
    target's member event, the join rules (join/invite/knock), the
    ``m.room.third_party_invite`` named by ``signed.token`` (invites) and, from v8,
    the member event of ``join_authorised_via_users_server`` (joins).

    Args:
        room_version: The room version identifier.
        event: The event (or event skeleton); malformed fields are skipped.

    Returns:
        The pairs in a stable order, without duplicates; empty for a create event.

    Raises:
        AuthError: The room version is unknown.
    """
    version = _version(room_version)
    body: Pdu = event if isinstance(event, Mapping) else {}
    etype = body.get("type")
    if not isinstance(etype, str):
        return []
    return auth_types_for_version(
        version, etype, body.get("sender"), body.get("state_key"), body.get("content")
    )
