"""Power levels: parsing values, a user's level, the level an action needs.

Spec: client-server-api ``m.room.power_levels`` (``data/event-schemas/schema/
m.room.power_levels.yaml``): a user absent from ``users`` has ``users_default``
(default 0); with no power levels event at all the room creator has 100 and everyone
else 0; ``events_default`` defaults to 0, ``state_default``, ``ban``, ``kick`` and
``redact`` to 50, ``invite`` to 0. Room v12 (``content/rooms/v12.md``
"Authorisation rules"): the room creators (sender of ``m.room.create`` plus
``content.additional_creators``) have an infinitely high power level, returned here
as :data:`math.inf`.

Value formats (``content/rooms/fragments/v1-stringy-power-levels.md`` and
``v1-floaty-power-levels.md``): before room v10 a level may be a string holding an
integer (``" +0100 "``) or, in v1-v5, a float that is truncated (``50.57`` -> 50).
From v10 (``content/rooms/v10.md``) only JSON integers are valid. Where the spec and
Synapse differ we follow Synapse for interoperability (CORE_API.md): pre-v10 strings
are parsed with Python's ``int()`` exactly as Synapse's ``event_auth`` does, which
also accepts ``"1_000"`` and non-ASCII digits that the fragment's grammar does not
list, and JSON booleans count as 0/1; floats are accepted in v6-v9 too (canonical
JSON rejects them before auth there, see ``v6-canonical-json.md``).

A value that cannot be parsed raises :class:`InvalidPowerLevel`. Values are parsed
lazily, only when a rule needs them, as Synapse does, so a garbage entry only
matters when it is read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pocketserver.core.room_versions import RoomVersion, get_room_version

__all__ = [
    "DEFAULT_NAMED_LEVELS",
    "InvalidPowerLevel",
    "default_power_levels_content",
    "get_event_send_level",
    "get_level_map",
    "get_named_level",
    "get_room_creators",
    "get_user_power_level",
    "parse_power_level",
]

DEFAULT_NAMED_LEVELS: Mapping[str, int] = {
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
    "events_default": 0,
    "state_default": 50,
    "users_default": 0,
}
"""Defaults of the top-level levels (``m.room.power_levels`` schema)."""


class InvalidPowerLevel(ValueError):
    """A power level value (or the map holding it) is not valid for the room version."""


def parse_power_level(value: object, *, integer_only: bool) -> int:
    """Return the integer a power level value stands for.

    Args:
        value: The JSON value found in power levels content.
        integer_only: True for room v10+ (only JSON integers are valid).

    Returns:
        The level as an ``int``.

    Raises:
        InvalidPowerLevel: The value is not a valid level for the room version.
    """
    if type(value) is int:
        return value
    if integer_only:
        raise InvalidPowerLevel(f"power level {value!r} is not an integer")
    if isinstance(value, bool):
        return int(value)  # Synapse: int(True) == 1
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPowerLevel(f"power level {value!r} is not finite")
        return int(value)  # v1-floaty-power-levels: truncate at the decimal point
    if isinstance(value, str):
        try:
            return int(value)  # v1-stringy-power-levels (Synapse's int() parsing)
        except ValueError:
            raise InvalidPowerLevel(f"power level {value!r} is not an integer") from None
    raise InvalidPowerLevel(f"power level {value!r} has the wrong type")


def _version(
    room_version: str | RoomVersion | None, create_event: Mapping[str, object]
) -> RoomVersion:
    if isinstance(room_version, RoomVersion):
        return room_version
    if room_version is None:
        content = create_event.get("content")
        found = content.get("room_version", "1") if isinstance(content, Mapping) else "1"
        room_version = found if isinstance(found, str) else "1"
    return get_room_version(room_version)


def get_room_creators(
    create_event: Mapping[str, object], room_version: str | RoomVersion | None = None
) -> frozenset[str]:
    """Return the room creators named by a room's ``m.room.create`` event.

    v1-v10: ``content.creator``; v11 (``v11.md``): the create event's ``sender``;
    v12 (``v12.md`` "Authorisation rules"): the ``sender`` plus every string in
    ``content.additional_creators``.

    Args:
        create_event: The ``m.room.create`` PDU.
        room_version: The room version; if None, read from ``content.room_version``
            (default ``"1"``).

    Returns:
        The creators' user IDs (empty if the event names none validly).

    Raises:
        UnsupportedRoomVersion: The room version is unknown.
    """
    version = _version(room_version, create_event)
    content = create_event.get("content")
    content = content if isinstance(content, Mapping) else {}
    found = create_event.get("sender") if version.implicit_room_creator else content.get("creator")
    creators = {found} if isinstance(found, str) else set()
    extra = content.get("additional_creators")
    if version.hydra and isinstance(extra, list):
        creators.update(c for c in extra if isinstance(c, str))
    return frozenset(creators)


def get_level_map(content: Mapping[str, object], key: str) -> Mapping[str, object]:
    """Return a map of levels (``users``, ``events``, ``notifications``) from content.

    Present but not an object (even ``null``) is invalid, as in Synapse, whose
    ``content.get("events", {}).get(...)`` fails on it.

    Args:
        content: Power levels content.
        key: The property name.

    Returns:
        The map; empty if the property is absent.

    Raises:
        InvalidPowerLevel: The property is present and not an object.
    """
    if key not in content:
        return {}
    value = content[key]
    if not isinstance(value, Mapping):
        raise InvalidPowerLevel(f"power levels {key!r} is not an object")
    return value


def get_user_power_level(
    user_id: str,
    power_levels_content: Mapping[str, object] | None,
    create_event: Mapping[str, object],
    *,
    room_version: str | RoomVersion | None = None,
) -> int | float:
    """Return a user's power level.

    Args:
        user_id: The user.
        power_levels_content: ``content`` of the current ``m.room.power_levels``
            event, or None if the room has none.
        create_event: The room's ``m.room.create`` PDU.
        room_version: The room version; if None, read from the create event.

    Returns:
        The level; :data:`math.inf` for a room v12 creator. Without power levels
        the creator has 100 and others 0 (v12: non-creators 0).

    Raises:
        InvalidPowerLevel: The level that applies to the user cannot be parsed.
        UnsupportedRoomVersion: The room version is unknown.
    """
    version = _version(room_version, create_event)
    creators = get_room_creators(create_event, version)
    if version.hydra and user_id in creators:
        return math.inf
    if power_levels_content is None:
        return 100 if user_id in creators else 0
    if not isinstance(power_levels_content, Mapping):
        raise InvalidPowerLevel("power levels content is not an object")
    level = get_level_map(power_levels_content, "users").get(user_id)
    if level is None:  # Synapse treats an explicit null as absent
        level = power_levels_content.get("users_default")
    if level is None:
        return DEFAULT_NAMED_LEVELS["users_default"]
    return parse_power_level(level, integer_only=version.integer_only_power_levels)


def get_named_level(
    content: Mapping[str, object] | None,
    name: str,
    default: int,
    *,
    integer_only: bool = False,
) -> int:
    """Return a top-level level such as ``ban``, ``kick``, ``redact`` or ``invite``.

    Args:
        content: Power levels content, or None if the room has none.
        name: The property name.
        default: The value when the property (or the whole event) is absent.
        integer_only: True for room v10+.

    Returns:
        The level.

    Raises:
        InvalidPowerLevel: The property is present but not a valid level.
    """
    if content is None:
        return default
    if not isinstance(content, Mapping):
        raise InvalidPowerLevel("power levels content is not an object")
    value = content.get(name)
    if value is None:
        return default
    return parse_power_level(value, integer_only=integer_only)


def get_event_send_level(
    event_type: str,
    state_key: str | None,
    power_levels_content: Mapping[str, object] | None,
    *,
    integer_only: bool = False,
) -> int:
    """Return the *required power level* to send an event (server-server-api.md).

    ``events[event_type]`` if set, else ``state_default`` (50) for state events and
    ``events_default`` (0) for others; 50 for state events even when the room has no
    power levels event (``m.room.power_levels`` schema).

    Args:
        event_type: The event's ``type``.
        state_key: The event's ``state_key``, or None for a non-state event.
        power_levels_content: Power levels content, or None if the room has none.
        integer_only: True for room v10+.

    Returns:
        The level.

    Raises:
        InvalidPowerLevel: A level that applies cannot be parsed.
    """
    content = power_levels_content if power_levels_content is not None else {}
    if not isinstance(content, Mapping):
        raise InvalidPowerLevel("power levels content is not an object")
    level = get_level_map(content, "events").get(event_type)
    if level is not None:
        return parse_power_level(level, integer_only=integer_only)
    name = "state_default" if state_key is not None else "events_default"
    return get_named_level(content, name, DEFAULT_NAMED_LEVELS[name], integer_only=integer_only)


def default_power_levels_content(creator: str, room_version: str) -> dict[str, object]:
    """Return the power levels content a server sends when creating a room.

    Follows Synapse's defaults for the ``private_chat``/``public_chat`` presets
    (client-server-api "Creation"). For room v12 the creator is not listed in
    ``users`` (creators must not appear there, ``v12.md`` rule 10.4) and
    ``m.room.tombstone`` gets 150, above ``state_default`` (schema note for v12).

    Args:
        creator: The creating user's ID.
        room_version: The room version.

    Returns:
        A fresh ``m.room.power_levels`` content dict.

    Raises:
        UnsupportedRoomVersion: The room version is unknown.
    """
    version = get_room_version(room_version)
    events: dict[str, object] = {
        "m.room.name": 50,
        "m.room.power_levels": 100,
        "m.room.history_visibility": 100,
        "m.room.canonical_alias": 50,
        "m.room.avatar": 50,
        "m.room.tombstone": 150 if version.hydra else 100,
        "m.room.server_acl": 100,
        "m.room.encryption": 100,
    }
    return {
        "users": {} if version.hydra else {creator: 100},
        "users_default": 0,
        "events": events,
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "notifications": {"room": 50},
    }
