"""What a local client may ask for beyond what the auth rules allow.

The auth rules decide which events a room accepts from anyone, over federation
too. Some client requests need more: a redaction that the auth rules let through
(room v3+ leave redactions to the receiving server, and v1/v2 allow any redaction
between events of the same server) must still come from the event's sender or a
user at the ``redact`` level, and ``/kick`` and ``/unban`` only make sense for a
target that is in the room or banned. These checks are made by the server that
the request reaches, as Synapse makes them (handlers/message.py and
handlers/room_member.py), before the event is created.

Pure: values in, :class:`ActionRefused` out.
"""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.core.power_levels import InvalidPowerLevel, get_named_level, get_user_power_level
from pocketserver.core.room_versions import get_room_version

__all__ = ["ActionRefused", "check_local_redaction", "check_membership_action"]


class ActionRefused(Exception):
    """The request is refused; ``status`` and ``errcode`` are what the client gets."""

    def __init__(self, status: int, errcode: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message


def check_local_redaction(
    room_version: str,
    room_id: str,
    sender: str,
    target: Mapping[str, object] | None,
    power_levels_content: Mapping[str, object] | None,
    create_event: Mapping[str, object],
) -> None:
    """Refuse a local redaction its sender may not make.

    Spec: client-server-api "Redactions" ("the server should only allow users to
    redact events that they sent, or if they have the power level to redact events
    of others", via the ``redact`` level of ``m.room.power_levels``) and
    rooms/fragments/v3-handling-redactions.md. As Synapse
    (``EventCreationHandler.persist_and_notify_client_events``):

    - the create event and ``m.room.server_acl`` are never redacted (403);
    - an event of another room is 400 (Synapse answers ``M_UNKNOWN``; this uses
      ``M_INVALID_PARAM``, the spec's code for a bad request parameter);
    - at the ``redact`` level anything else may be redacted, even an event this
      server does not know (the redaction then waits for it, as over federation);
    - below it, only one's own events: an unknown event is 404 ``M_NOT_FOUND``,
      another user's 403 ``M_FORBIDDEN``.

    Args:
        room_version: The room's version.
        room_id: The room the redaction is sent in.
        sender: The user redacting.
        target: The PDU being redacted, or None if unknown here (or rejected).
        power_levels_content: ``content`` of the room's current power levels.
        create_event: The room's create PDU.

    Raises:
        ActionRefused: The redaction may not be made.
    """
    if target is not None:
        if target.get("type") == "m.room.create":
            raise ActionRefused(403, "M_FORBIDDEN", "the room's create event cannot be redacted")
        if target.get("room_id") != room_id:
            raise ActionRefused(400, "M_INVALID_PARAM", "that event is in another room")
        if target.get("type") == "m.room.server_acl":
            raise ActionRefused(403, "M_FORBIDDEN", "server ACL events cannot be redacted")
    version = get_room_version(room_version)
    try:
        level = get_user_power_level(
            sender, power_levels_content, create_event, room_version=room_version
        )
        redact_level = get_named_level(
            power_levels_content, "redact", 50, integer_only=version.integer_only_power_levels
        )
    except InvalidPowerLevel:
        level, redact_level = 0, 1  # unreadable levels: only one's own events
    if level >= redact_level:
        return
    if target is None:
        raise ActionRefused(404, "M_NOT_FOUND", "unknown event (only your own can be redacted)")
    if target.get("sender") != sender:
        raise ActionRefused(
            403,
            "M_FORBIDDEN",
            "you may only redact your own events: redacting others' needs the redact level",
        )


KICKABLE = frozenset({"join", "invite", "knock"})


def check_membership_action(action: str, current: str | None) -> None:
    """Refuse a membership verb that makes no sense for the target's membership.

    The auth rules let a user at the ``ban`` level turn a ban into ``leave`` and a
    user at the ``kick`` level write ``leave`` for anyone not banned; the verbs of
    the client API are narrower (client-server-api "Room membership"):

    - ``kick`` (``POST /rooms/{roomId}/kick``): the spec lists "The kickee is not
      currently in the room" as a 403. A banned user is not in the room, and a
      kick must never lift a ban. A pending invite or knock may be kicked (that
      revokes it), as Synapse allows. 403 ``M_FORBIDDEN``.
    - ``unban`` (``POST /rooms/{roomId}/unban``): only a banned user; otherwise 403
      ``M_BAD_STATE``, Synapse's answer ("Cannot unban user who was not banned").
    - ``invite`` of a banned or joined user is left to the auth rules (403
      ``M_FORBIDDEN``, spec inviting.yaml), ``ban`` of anyone is allowed.

    Args:
        action: ``kick``, ``unban``, or another verb (no check here).
        current: The target's membership in the room's current state, if any.

    Raises:
        ActionRefused: The verb does not apply to the target.
    """
    if action == "kick" and current not in KICKABLE:
        raise ActionRefused(403, "M_FORBIDDEN", "the target user is not in the room")
    if action == "unban" and current != "ban":
        raise ActionRefused(
            403, "M_BAD_STATE", f"cannot unban a user who is not banned (membership={current})"
        )
