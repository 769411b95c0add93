"""Push rule conditions: property paths, the evaluation context, each condition kind.

Spec: client-server-api ``modules/push.md`` "Conditions" and appendices.md
"Dot-separated property paths". A condition is a JSON object; one that is not a
well-formed instance of a known kind never matches ("Unrecognised conditions MUST
NOT match any events"), so stored garbage disables its rule instead of raising.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pocketserver.core.push_glob import glob_matches, literal_word_matches

__all__ = [
    "DEFAULT_NOTIFICATION_LEVEL",
    "PushContext",
    "condition_matches",
    "is_simple_value",
    "lookup_property",
    "split_property_path",
]

DEFAULT_NOTIFICATION_LEVEL = 50
"""Level needed for a notification key absent from power levels ``notifications``.

The ``m.room.power_levels`` schema gives 50 for ``room``; for other keys the spec
names no default and we use 50 as well (as Synapse does).
"""

_MAX_SAFE_INT = 2**53 - 1
_MEMBER_COUNT = re.compile(r"(==|<=|>=|<|>)?([0-9]+)")


@dataclass(frozen=True, slots=True)
class PushContext:
    """What conditions need to know besides the event, for one user and room.

    Attributes:
        user_id: The user whose rules are evaluated.
        user_display_name: Their display name in the room (``None`` if unset).
        room_member_count: Joined members of the room (push.md ``room_member_count``).
        sender_power_level: The event sender's power level in the room.
        notification_power_levels: Power levels ``notifications`` content, e.g.
            ``{"room": 50}``; a missing key means :data:`DEFAULT_NOTIFICATION_LEVEL`.
    """

    user_id: str
    user_display_name: str | None = None
    room_member_count: int = 0
    sender_power_level: int = 0
    notification_power_levels: Mapping[str, int] = field(default_factory=dict)


@functools.lru_cache(maxsize=512)
def split_property_path(key: str) -> tuple[str, ...]:
    """Split a dot-separated property path into property names.

    Spec: appendices.md "Dot-separated property paths": ``.`` separates names;
    ``\\.`` is a literal dot and ``\\\\`` a literal backslash; any other backslash
    is kept as-is (``\\x`` is a backslash followed by ``x``).

    Args:
        key: A path such as ``content.m\\.relates_to.rel_type``.

    Returns:
        The names, e.g. ``("content", "m.relates_to", "rel_type")``.
    """
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        char = key[i]
        if char == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return tuple(parts)


def lookup_property(event: Mapping[str, object], key: str) -> tuple[bool, object]:
    """Find the value a dot-separated path names in an event.

    Args:
        event: The event (a JSON object).
        key: The dot-separated path (see :func:`split_property_path`).

    Returns:
        ``(True, value)`` if every name along the path exists in a JSON object,
        else ``(False, None)``.
    """
    value: object = event
    for name in split_property_path(key):
        if not isinstance(value, Mapping) or name not in value:
            return False, None
        value = value[name]
    return True, value


def is_simple_value(value: object) -> bool:
    """Whether ``value`` is a non-compound canonical JSON value.

    Spec: push.md ``event_property_is``: strings, integers in
    ``[-(2**53)+1, (2**53)-1]``, booleans and ``null``.

    Args:
        value: Any decoded JSON value.

    Returns:
        True for those values (floats and compound values are not).
    """
    if value is None or isinstance(value, str | bool):
        return True
    return type(value) is int and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT


def _same_value(a: object, b: object) -> bool:
    """Exact equality without casting (``True`` is not ``1``)."""
    return type(a) is type(b) and a == b


def _event_match(cond: Mapping[str, object], event: Mapping[str, object]) -> bool:
    key, pattern = cond.get("key"), cond.get("pattern")
    if not isinstance(key, str) or not isinstance(pattern, str):
        return False
    found, value = lookup_property(event, key)
    if not found or not isinstance(value, str):
        return False
    return glob_matches(pattern, value, word_boundary=key == "content.body")


def _property_is(cond: Mapping[str, object], event: Mapping[str, object]) -> bool:
    key, expected = cond.get("key"), cond.get("value", ...)
    if not isinstance(key, str) or not is_simple_value(expected):
        return False
    found, value = lookup_property(event, key)
    return found and is_simple_value(value) and _same_value(value, expected)


def _property_contains(cond: Mapping[str, object], event: Mapping[str, object]) -> bool:
    key, expected = cond.get("key"), cond.get("value", ...)
    if not isinstance(key, str) or not is_simple_value(expected):
        return False
    found, value = lookup_property(event, key)
    if not found or not isinstance(value, list):
        return False
    return any(is_simple_value(item) and _same_value(item, expected) for item in value)


def _display_name(event: Mapping[str, object], context: PushContext) -> bool:
    name = context.user_display_name
    found, body = lookup_property(event, "content.body")
    if not name or not found or not isinstance(body, str):
        return False
    return literal_word_matches(name, body)


def _member_count(cond: Mapping[str, object], context: PushContext) -> bool:
    spec = cond.get("is")
    parsed = _MEMBER_COUNT.fullmatch(spec) if isinstance(spec, str) else None
    if parsed is None:
        return False
    count, op, number = context.room_member_count, parsed.group(1), int(parsed.group(2))
    if op == "<":
        return count < number
    if op == ">":
        return count > number
    if op == "<=":
        return count <= number
    if op == ">=":
        return count >= number
    return count == number


def _sender_permission(cond: Mapping[str, object], context: PushContext) -> bool:
    key = cond.get("key")
    if not isinstance(key, str):
        return False
    needed = context.notification_power_levels.get(key, DEFAULT_NOTIFICATION_LEVEL)
    return context.sender_power_level >= needed


def condition_matches(condition: object, event: Mapping[str, object], context: PushContext) -> bool:
    """Whether one push condition holds for an event.

    Spec: push.md "Conditions": ``event_match``, ``event_property_is``,
    ``event_property_contains``, ``contains_display_name`` (deprecated in v1.17 but
    still defined), ``room_member_count``, ``sender_notification_permission``.
    Unknown kinds and malformed conditions do not match.

    Args:
        condition: The condition object (anything; non-objects never match).
        event: The event being evaluated.
        context: The user, room and sender facts the conditions need.

    Returns:
        True if the condition holds.
    """
    if not isinstance(condition, Mapping):
        return False
    kind = condition.get("kind")
    if kind == "event_match":
        return _event_match(condition, event)
    if kind == "event_property_is":
        return _property_is(condition, event)
    if kind == "event_property_contains":
        return _property_contains(condition, event)
    if kind == "contains_display_name":
        return _display_name(event, context)
    if kind == "room_member_count":
        return _member_count(condition, context)
    if kind == "sender_notification_permission":
        return _sender_permission(condition, context)
    return False
