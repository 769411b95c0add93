"""Authorisation rules about the event itself and the *shape* of its auth events.

Covers, for every room version: the basic shape check of the PDU fields the rules
read, rule 1 (``m.room.create``), v12 rule 2 (the room ID is the create event's ID),
rule 2 / v12 rule 3 (the ``auth_events``: duplicates, unexpected entries, missing
create event, other rooms, v12: create event listed) and the auth events selection
algorithm (server-server-api.md "Auth events selection").

Rule numbers below are those of ``content/rooms/fragments/v1-auth-rules.md`` (v1, v2),
``v3-auth-rules.md`` (v3-v5), the inline rules of ``v6.md``/``v7.md``,
``v8-auth-rules.md`` (v8, v9), ``v10.md``, ``v11.md`` and ``v12.md``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.core.auth_context import (
    CREATE_KEY,
    AuthError,
    Pdu,
    StateMap,
    as_map,
    as_str,
    domain_of,
    is_valid_user_id,
)
from pocketserver.core.crypto import compute_reference_hash
from pocketserver.core.room_versions import (
    KNOWN_ROOM_VERSIONS,
    EventIdFormat,
    RoomVersion,
)

__all__ = [
    "EventFields",
    "auth_types_for_version",
    "check_auth_events_shape",
    "check_create_event",
    "check_room_id_is_create",
    "create_event_id",
    "edge_ids",
    "event_fields",
]

EventFields = tuple[str, str, str | None, Mapping[str, object]]
"""``(type, sender, state_key, content)`` of a PDU whose basic shape is valid."""


def event_fields(event: object) -> EventFields:
    """Return the fields every rule reads, after checking their JSON types.

    These are PDU format requirements (``api/server-server/definitions/pdu_v*``)
    rather than numbered auth rules: an event without them cannot be authorised.

    Args:
        event: The candidate PDU.

    Returns:
        ``(type, sender, state_key, content)``; ``state_key`` is None for a
        non-state event.

    Raises:
        AuthError: A field is missing or has the wrong type (rule ``"format"``).
    """
    if not isinstance(event, Mapping):
        raise AuthError("format", "event is not an object")
    etype, sender = event.get("type"), event.get("sender")
    if not isinstance(etype, str):
        raise AuthError("format", "event type is not a string")
    if not isinstance(sender, str) or not sender.startswith("@") or ":" not in sender:
        raise AuthError("format", "sender is not a user ID")
    state_key = event.get("state_key")
    if state_key is not None and not isinstance(state_key, str):
        raise AuthError("format", "state_key is not a string")
    content = event.get("content")
    if not isinstance(content, Mapping):
        raise AuthError("format", "content is not an object")
    return etype, sender, state_key, content


def edge_ids(version: RoomVersion, event: Pdu, field: str) -> list[str]:
    """Return the event IDs listed in ``prev_events`` or ``auth_events``.

    v1/v2 list ``[event_id, {"sha256": ...}]`` pairs, v3+ plain IDs (``v3.md``
    "Event format"). A missing field counts as empty.

    Args:
        version: The room version.
        event: The PDU.
        field: ``"prev_events"`` or ``"auth_events"``.

    Returns:
        The IDs, in order (duplicates kept).

    Raises:
        AuthError: The field is not a list of the right shape (rule ``"format"``).
    """
    value = event.get(field, [])
    if not isinstance(value, list):
        raise AuthError("format", f"{field} is not a list")
    ids: list[str] = []
    for entry in value:
        if version.event_ids_in_pdu and isinstance(entry, list | tuple) and entry:
            entry = entry[0]
        if not isinstance(entry, str):
            raise AuthError("format", f"{field} holds a malformed entry")
        ids.append(entry)
    return ids


def create_event_id(version: RoomVersion, create: Pdu) -> str | None:
    """Return the ID of a create event.

    v1/v2 carry it in ``event_id``; v3+ callers may include ``event_id`` for
    convenience, otherwise it is computed from the reference hash (``v3.md``,
    ``v4-event-ids.md``: standard base64 for v3, URL-safe from v4).

    Args:
        version: The room version.
        create: The ``m.room.create`` PDU.

    Returns:
        The event ID, or None if it cannot be known (no usable ``event_id`` in
        v1/v2, or an event that cannot be hashed).
    """
    given = as_str(create.get("event_id"))
    if given is not None or version.event_ids_in_pdu:
        return given
    try:
        digest = compute_reference_hash(create, version.identifier)
    except Exception:  # another module's code on untrusted input: any failure = unknown
        return None
    if version.event_id_format is not EventIdFormat.V3:
        digest = digest.replace("+", "-").replace("/", "_")
    return "$" + digest


def check_create_event(version: RoomVersion, event: Pdu, sender: str) -> None:
    """Rule 1: the ``m.room.create`` event.

    1.1 any ``prev_events`` -> reject; 1.2 (v1-v11) room ID domain differs from the
    sender's -> reject, (v12) the event has a ``room_id`` -> reject; 1.3 unknown
    ``content.room_version`` -> reject; 1.4 (v1-v10) no ``content.creator`` ->
    reject; v12 1.4 ``additional_creators`` present and not an array of valid
    user IDs -> reject; otherwise allow.

    Args:
        version: The room version.
        event: The create event.
        sender: Its (shape-checked) sender.

    Raises:
        AuthError: The event is rejected.
    """
    if edge_ids(version, event, "prev_events"):
        raise AuthError("create.prev_events", "the create event has prev_events (rule 1.1)")
    if version.hydra:
        if "room_id" in event:
            raise AuthError("create.room_id", "v12 create events have no room_id (v12 1.2)")
    else:
        room_id = as_str(event.get("room_id"))
        if room_id is None or domain_of(room_id) != domain_of(sender):
            raise AuthError("create.room_id", "room_id domain is not the sender's (rule 1.2)")
    content = as_map(event.get("content"))
    room_version = content.get("room_version", "1")
    if not isinstance(room_version, str) or room_version not in KNOWN_ROOM_VERSIONS:
        raise AuthError("create.room_version", "unknown content.room_version (rule 1.3)")
    if not version.implicit_room_creator and "creator" not in content:
        raise AuthError("create.creator", "content has no creator (rule 1.4)")
    if version.hydra and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise AuthError(
                "create.additional_creators",
                "additional_creators is not an array of user IDs (v12 1.4)",
            )


def check_room_id_is_create(version: RoomVersion, event: Pdu, create: Pdu) -> None:
    """v12 rule 2: the ``room_id`` must be the create event's ID with sigil ``!``.

    Whether that create event was itself accepted is the caller's concern (rejected
    events are never passed in).

    Args:
        version: The room version (no-op before v12).
        event: The event being authorised.
        create: The create event the caller found for the room.

    Raises:
        AuthError: The room ID does not name this create event.
    """
    if not version.hydra:
        return
    room_id = as_str(event.get("room_id"))
    create_id = create_event_id(version, create)
    if room_id is None or create_id is None or room_id != "!" + create_id[1:]:
        raise AuthError("room_id.create", "room_id is not the create event's ID (v12 rule 2)")


def auth_types_for_version(
    version: RoomVersion, etype: str, sender: object, state_key: object, content: object
) -> list[tuple[str, str]]:
    """The auth events selection algorithm (server-server-api.md "Auth events selection").

    Args:
        version: The room version.
        etype: The event type.
        sender: The event's sender (ignored unless a string).
        state_key: The event's state key.
        content: The event's content.

    Returns:
        The (type, state_key) pairs, in a stable order without duplicates. Empty for
        ``m.room.create``; never the create event in v12.
    """
    if etype == "m.room.create":
        return []
    keys: list[tuple[str, str]] = [] if version.hydra else [CREATE_KEY]
    keys.append(("m.room.power_levels", ""))
    if isinstance(sender, str):
        keys.append(("m.room.member", sender))
    body = as_map(content)
    membership = body.get("membership")
    if etype == "m.room.member" and isinstance(state_key, str):
        keys.append(("m.room.member", state_key))
        if membership in ("join", "invite", "knock"):
            keys.append(("m.room.join_rules", ""))
        token = as_map(as_map(body.get("third_party_invite")).get("signed")).get("token")
        if membership == "invite" and isinstance(token, str):
            keys.append(("m.room.third_party_invite", token))
        via = body.get("join_authorised_via_users_server")
        if version.restricted_join_rule and membership == "join" and isinstance(via, str):
            keys.append(("m.room.member", via))
    return list(dict.fromkeys(keys))


def check_auth_events_shape(
    version: RoomVersion,
    event: Pdu,
    fields: EventFields,
    auth_events: StateMap,
) -> None:
    """Rule 2 (v12: rule 3): the event's ``auth_events``.

    2.1 duplicate (type, state_key) entries -> reject. A (type, state_key)
    mapping cannot hold two entries for one key, so a listed ID repeated, or more
    listed IDs than mapping entries (a collision, or an auth event the caller did
    not supply), is rejected. 2.2 entries not chosen by the auth events selection
    -> reject (v12: the create event is never selected, so listing its ID is
    rejected). 2.3 rejected entries: the caller never passes rejected events.
    2.4 (v1-v11) no ``m.room.create`` -> reject. 2.5 an entry from another room
    -> reject.

    Args:
        version: The room version.
        event: The event being authorised.
        fields: Its checked fields (:func:`event_fields`).
        auth_events: The mapping given to ``check_auth`` (keys already checked).

    Raises:
        AuthError: The auth events are not acceptable.
    """
    etype, sender, state_key, content = fields
    listed = edge_ids(version, event, "auth_events")
    room_id = event.get("room_id")
    if version.hydra and isinstance(room_id, str) and "$" + room_id[1:] in listed:
        raise AuthError("auth_events.unexpected", "v12 events must not cite the create event")
    if len(set(listed)) != len(listed):
        raise AuthError("auth_events.duplicate", "an auth event is listed twice (rule 2.1)")
    supplied = len(auth_events) - (1 if version.hydra and CREATE_KEY in auth_events else 0)
    if len(listed) > supplied:
        raise AuthError(
            "auth_events.duplicate",
            "listed auth events collide on (type, state_key) or were not supplied (rule 2.1)",
        )
    expected = set(auth_types_for_version(version, etype, sender, state_key, content))
    for key, auth_event in auth_events.items():
        if version.hydra and key == CREATE_KEY:
            continue  # implied by the room ID, checked by v12 rule 2
        if key not in expected:
            raise AuthError("auth_events.unexpected", f"unexpected auth event {key} (rule 2.2)")
        if auth_event.get("room_id") != room_id:
            raise AuthError("auth_events.room", f"auth event {key} is in another room (2.5)")
    if CREATE_KEY not in auth_events:
        raise AuthError("auth_events.no_create", "no m.room.create auth event (rule 2.4)")
