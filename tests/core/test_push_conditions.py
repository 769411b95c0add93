"""Each push condition kind, table-driven from push.md "Conditions"."""

from __future__ import annotations

import pytest

from pocketserver.core.push_conditions import (
    PushContext,
    condition_matches,
    is_simple_value,
)

ME = "@me:example.org"
CTX = PushContext(
    user_id=ME,
    user_display_name="Alice",
    room_member_count=2,
    sender_power_level=50,
    notification_power_levels={"room": 50},
)


def _topic(topic: object) -> dict[str, object]:
    return {
        "content": {"topic": topic},
        "event_id": "$143273582443PhrSn:example.org",
        "room_id": "!636q39766251:example.com",
        "sender": "@example:example.org",
        "state_key": "",
        "type": "m.room.topic",
    }


def _body(body: object) -> dict[str, object]:
    return {"type": "m.room.message", "sender": "@x:y", "content": {"body": body}}


LUNCH = {"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}
EXPLE = {"kind": "event_match", "key": "content.body", "pattern": "ex*ple"}

EVENT_MATCH = [
    # push.md event_match note
    (LUNCH, _topic("Lunch plans"), True),
    (LUNCH, _topic("LUNCH"), True),
    (LUNCH, _topic(" lunch"), False),
    (LUNCH, _topic("lunc"), False),
    (LUNCH, _topic(None), False),  # not a string
    # absent or not a string: no match even with pattern "*"
    ({"kind": "event_match", "key": "content.nope", "pattern": "*"}, _topic("x"), False),
    ({"kind": "event_match", "key": "content.topic", "pattern": "*"}, _topic(5), False),
    ({"kind": "event_match", "key": "content.topic", "pattern": "*"}, _topic(True), False),
    ({"kind": "event_match", "key": "content.topic", "pattern": "*"}, _topic(["a"]), False),
    ({"kind": "event_match", "key": "content.topic", "pattern": "*"}, _topic({"a": "b"}), False),
    ({"kind": "event_match", "key": "content", "pattern": "*"}, _topic("x"), False),
    ({"kind": "event_match", "key": "content.topic", "pattern": "*"}, _topic(""), True),
    ({"kind": "event_match", "key": "content.topic", "pattern": "5"}, _topic(5), False),
    # push.md content.body note
    (EXPLE, _body("An example event."), True),
    (EXPLE, _body("exple"), True),
    (EXPLE, _body("An exciting triple-whammy"), True),
    (EXPLE, _body("examples"), False),
    # only content.body gets word matching; other keys match the whole value
    (
        {"kind": "event_match", "key": "content.topic", "pattern": "ex*ple"},
        _topic("an example"),
        False,
    ),
    ({"kind": "event_match", "key": "type", "pattern": "m.room.*"}, _topic("x"), True),
    ({"kind": "event_match", "key": "type", "pattern": "m.room"}, _topic("x"), False),
    ({"kind": "event_match", "key": "state_key", "pattern": ""}, _topic("x"), True),
    ({"kind": "event_match", "key": "state_key", "pattern": ""}, _body("x"), False),  # no state_key
    # escaped dots in keys
    (
        {"kind": "event_match", "key": "content.m\\.relates_to.rel_type", "pattern": "m.thread"},
        {"content": {"m.relates_to": {"rel_type": "m.thread"}}},
        True,
    ),
    (
        {"kind": "event_match", "key": "content.m.relates_to.rel_type", "pattern": "m.thread"},
        {"content": {"m.relates_to": {"rel_type": "m.thread"}}},
        False,
    ),
    # malformed: missing or non-string key / pattern
    ({"kind": "event_match", "key": "content.topic"}, _topic("x"), False),
    ({"kind": "event_match", "pattern": "*"}, _topic("x"), False),
    ({"kind": "event_match", "key": 5, "pattern": "*"}, _topic("x"), False),
    ({"kind": "event_match", "key": "content.topic", "pattern": None}, _topic("x"), False),
]

FEDERATE_EVENT = {
    "content": {
        "creator": "@example:example.org",
        "m.federate": True,
        "predecessor": {"event_id": "$something:example.org", "room_id": "!oldroom:example.org"},
        "room_version": "1",
    },
    "type": "m.room.create",
    "state_key": "",
}


def _is(key: str, value: object) -> dict[str, object]:
    return {"kind": "event_property_is", "key": key, "value": value}


EVENT_PROPERTY_IS = [
    # push.md event_property_is note
    (_is("content.m\\.federate", True), FEDERATE_EVENT, True),
    (_is("content.m\\.federate", "true"), FEDERATE_EVENT, False),
    (_is("content.m\\.federate", 1), FEDERATE_EVENT, False),  # do not cast types
    (_is("content.m\\.federate", False), FEDERATE_EVENT, False),
    (_is("content.room_version", "1"), FEDERATE_EVENT, True),
    (_is("content.room_version", 1), FEDERATE_EVENT, False),
    (_is("content.predecessor.room_id", "!oldroom:example.org"), FEDERATE_EVENT, True),
    (_is("content.predecessor", None), FEDERATE_EVENT, False),  # compound value
    (_is("content.missing", None), FEDERATE_EVENT, False),  # absent is not null
    (_is("content.x", None), {"content": {"x": None}}, True),
    (_is("content.x", 0), {"content": {"x": 0}}, True),
    (_is("content.x", 0), {"content": {"x": False}}, False),
    (_is("content.x", 1), {"content": {"x": 1.0}}, False),  # floats are not canonical JSON
    (_is("content.x", 2**53 - 1), {"content": {"x": 2**53 - 1}}, True),
    (_is("content.x", 2**53), {"content": {"x": 2**53}}, False),  # out of range
    (_is("content.x", -(2**53) + 1), {"content": {"x": -(2**53) + 1}}, True),
    (_is("content.x", "A"), {"content": {"x": "a"}}, False),  # exact, not case-insensitive
    (_is("content.x", "a*"), {"content": {"x": "ab"}}, False),  # not a glob
    (_is("content.x", [1]), {"content": {"x": [1]}}, False),  # compound condition value
    ({"kind": "event_property_is", "key": "content.x"}, {"content": {"x": None}}, False),
]


def _contains(key: str, value: object) -> dict[str, object]:
    return {"kind": "event_property_contains", "key": key, "value": value}


ALIASES = {
    "content": {
        "alias": "#somewhere:localhost",
        "alt_aliases": ["#somewhere:example.org", "#myroom:example.com"],
    },
    "type": "m.room.canonical_alias",
    "state_key": "",
}

EVENT_PROPERTY_CONTAINS = [
    # push.md event_property_contains note
    (_contains("content.alt_aliases", "#myroom:example.com"), ALIASES, True),
    (_contains("content.alt_aliases", ":example.com"), ALIASES, False),  # partial
    (_contains("content.alias", "#somewhere:localhost"), ALIASES, False),  # not an array
    (_contains("content.nope", "x"), ALIASES, False),
    (_contains("content.a", 1), {"content": {"a": [True, 1]}}, True),
    (_contains("content.a", 1), {"content": {"a": [True]}}, False),  # no casting
    (_contains("content.a", True), {"content": {"a": [1]}}, False),
    (_contains("content.a", None), {"content": {"a": [None]}}, True),
    (_contains("content.a", 1), {"content": {"a": [1.0]}}, False),
    (_contains("content.a", "x"), {"content": {"a": [["x"], {"x": "x"}]}}, False),  # ignored
    (_contains("content.a", "x"), {"content": {"a": [["x"], "x"]}}, True),
    (_contains("content.a", "X"), {"content": {"a": ["x"]}}, False),
    (_contains("content.a", ["x"]), {"content": {"a": [["x"]]}}, False),
    (
        _contains("content.m\\.mentions.user_ids", ME),
        {"content": {"m.mentions": {"user_ids": ["@other:x", ME]}}},
        True,
    ),
]

DISPLAY_NAME = [
    ("Alice", _body("hello alice!"), True),
    ("Alice", _body("hello ALICE"), True),
    ("Alice", _body("malice"), False),
    ("Alice", _body("alices"), False),
    ("Alice", _body(None), False),
    ("Alice", {"content": {}}, False),
    ("Alice", {"content": {"body": ["Alice"]}}, False),
    ("", _body("anything"), False),  # empty display name never matches
    (None, _body("None"), False),
    ("Mr. X", _body("Hi mr. x, hi"), True),
]

MEMBER_COUNT = [
    # (is, member count, matches)
    ("2", 2, True),
    ("2", 3, False),
    ("==2", 2, True),
    ("==2", 1, False),
    ("<2", 1, True),
    ("<2", 2, False),
    (">2", 3, True),
    (">2", 2, False),
    ("<=2", 2, True),
    ("<=2", 3, False),
    (">=2", 2, True),
    (">=2", 1, False),
    ("02", 2, True),
    ("10", 10, True),
    ("=2", 2, False),  # not a valid prefix
    ("+2", 2, False),
    ("-2", 2, False),
    (" 2", 2, False),
    ("2 ", 2, False),
    ("2.0", 2, False),
    ("", 0, False),
    (">", 2, False),
    ("٢", 2, False),  # ASCII decimal digits only
    (2, 2, False),  # must be a string
]

SENDER_PERMISSION = [
    # (key, sender level, notification levels, matches)
    ("room", 50, {"room": 50}, True),
    ("room", 49, {"room": 50}, False),
    ("room", 100, {"room": 100}, True),
    ("room", 0, {"room": 0}, True),
    ("room", 49, {}, False),  # room defaults to 50
    ("room", 50, {}, True),
    ("other", 50, {"room": 0}, True),  # unknown keys: 50 as well (Synapse)
    ("other", 49, {"room": 0}, False),
    ("other", 10, {"other": 10}, True),
    ("room", -5, {"room": -10}, True),
]


@pytest.mark.parametrize(("condition", "event", "expected"), EVENT_MATCH)
def test_event_match(
    condition: dict[str, object], event: dict[str, object], expected: bool
) -> None:
    assert condition_matches(condition, event, CTX) is expected


@pytest.mark.parametrize(("condition", "event", "expected"), EVENT_PROPERTY_IS)
def test_event_property_is(
    condition: dict[str, object], event: dict[str, object], expected: bool
) -> None:
    assert condition_matches(condition, event, CTX) is expected


@pytest.mark.parametrize(("condition", "event", "expected"), EVENT_PROPERTY_CONTAINS)
def test_event_property_contains(
    condition: dict[str, object], event: dict[str, object], expected: bool
) -> None:
    assert condition_matches(condition, event, CTX) is expected


@pytest.mark.parametrize(("name", "event", "expected"), DISPLAY_NAME)
def test_contains_display_name(name: str | None, event: dict[str, object], expected: bool) -> None:
    ctx = PushContext(user_id=ME, user_display_name=name)
    assert condition_matches({"kind": "contains_display_name"}, event, ctx) is expected


@pytest.mark.parametrize(("is_", "count", "expected"), MEMBER_COUNT)
def test_room_member_count(is_: object, count: int, expected: bool) -> None:
    ctx = PushContext(user_id=ME, room_member_count=count)
    assert condition_matches({"kind": "room_member_count", "is": is_}, {}, ctx) is expected


def test_room_member_count_needs_is() -> None:
    assert not condition_matches({"kind": "room_member_count"}, {}, CTX)


@pytest.mark.parametrize(("key", "level", "levels", "expected"), SENDER_PERMISSION)
def test_sender_notification_permission(
    key: str, level: int, levels: dict[str, int], expected: bool
) -> None:
    ctx = PushContext(user_id=ME, sender_power_level=level, notification_power_levels=levels)
    condition = {"kind": "sender_notification_permission", "key": key}
    assert condition_matches(condition, {}, ctx) is expected


@pytest.mark.parametrize(
    "condition",
    [
        {"kind": "org.example.unknown"},
        {"kind": "EVENT_MATCH", "key": "type", "pattern": "*"},  # kinds are case-sensitive
        {"key": "type", "pattern": "*"},  # no kind
        {"kind": None},
        "event_match",
        None,
        ["event_match"],
        {"kind": "sender_notification_permission"},  # no key
    ],
)
def test_unknown_or_malformed_conditions_never_match(condition: object) -> None:
    # push.md: "Unrecognised conditions MUST NOT match any events"
    assert not condition_matches(condition, _body("x"), CTX)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s", True),
        (0, True),
        (True, True),
        (None, True),
        (2**53 - 1, True),
        (-(2**53) + 1, True),
        (2**53, False),
        (-(2**53), False),
        (1.5, False),
        ([], False),
        ({}, False),
    ],
)
def test_is_simple_value(value: object, expected: bool) -> None:
    assert is_simple_value(value) is expected
