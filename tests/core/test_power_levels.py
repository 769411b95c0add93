"""Power level helpers (``pocketserver.core.power_levels``), from the spec text.

Sources: ``m.room.power_levels`` schema (defaults), ``fragments/v1-stringy-power-
levels.md``, ``fragments/v1-floaty-power-levels.md``, ``rooms/v10.md`` (integers
only), ``rooms/v11.md`` (creator = sender), ``rooms/v12.md`` (infinite creators).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from pocketserver.core.power_levels import (
    InvalidPowerLevel,
    default_power_levels_content,
    get_event_send_level,
    get_level_map,
    get_named_level,
    get_room_creators,
    get_user_power_level,
    parse_power_level,
)
from pocketserver.core.room_versions import UnsupportedRoomVersion

ALICE, BOB, CAROL = "@alice:a.example", "@bob:b.example", "@carol:c.example"


def create(version: str, **content: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"room_version": version, **content}
    if int(version) < 11:
        body.setdefault("creator", ALICE)
    return {"type": "m.room.create", "state_key": "", "sender": ALICE, "content": body}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (100, 100),
        (-5, -5),
        ("100", 100),  # stringy: base 10 integer
        ("000100", 100),  # leading zeroes
        ("+100", 100),
        ("-100", -100),
        (" 100 ", 100),  # surrounding whitespace
        (" 00100 ", 100),
        (" +100 ", 100),
        ("\t-100\n", -100),
        (50.57, 50),  # floaty: truncated at the decimal point
        (5.114698e4, 51146),
        (-1.9, -1),
        (True, 1),  # Synapse: int(True)
    ],
)
def test_parse_before_v10(value: Any, expected: int) -> None:
    assert parse_power_level(value, integer_only=False) == expected


@pytest.mark.parametrize(
    "value",
    ["1.5", "1e3", "", " ", "fifty", "0x10", math.inf, -math.inf, math.nan, None, [], {}],
)
def test_parse_invalid_before_v10(value: Any) -> None:
    """Not integer formats; Infinity/-Infinity/NaN "cause the powerlevel event to be rejected"."""
    with pytest.raises(InvalidPowerLevel):
        parse_power_level(value, integer_only=False)


@pytest.mark.parametrize("value", ["100", 100.0, 50.5, True, None])
def test_parse_integer_only(value: Any) -> None:
    """v10+: only JSON integers."""
    with pytest.raises(InvalidPowerLevel):
        parse_power_level(value, integer_only=True)
    assert parse_power_level(7, integer_only=True) == 7


@pytest.mark.parametrize(
    ("version", "content", "expected"),
    [
        ("1", {"creator": BOB}, {BOB}),
        ("10", {"creator": BOB}, {BOB}),
        ("10", {"creator": 5}, set()),
        ("11", {"creator": BOB}, {ALICE}),
        ("11", {"additional_creators": [BOB]}, {ALICE}),
        ("12", {"additional_creators": [BOB, 3, CAROL]}, {ALICE, BOB, CAROL}),
        ("12", {"additional_creators": "x"}, {ALICE}),
    ],
)
def test_room_creators(version: str, content: dict[str, Any], expected: set[str]) -> None:
    assert get_room_creators(create(version, **content)) == expected


POWER = {"users": {BOB: 60, CAROL: None}, "users_default": 5}


@pytest.mark.parametrize(
    ("version", "user", "power", "expected"),
    [
        ("10", BOB, POWER, 60),
        ("10", CAROL, POWER, 5),  # explicit null: users_default (as Synapse)
        ("10", ALICE, POWER, 5),  # the creator is not special once power levels exist
        ("10", ALICE, {}, 0),
        ("10", ALICE, {"users_default": None}, 0),
        ("10", ALICE, None, 100),  # no power levels: creator 100
        ("10", BOB, None, 0),  # others 0
        ("11", ALICE, None, 100),
        ("12", ALICE, None, math.inf),  # v12 creators: infinite
        ("12", ALICE, {"users": {ALICE: 1}}, math.inf),
        ("12", BOB, None, 0),
        ("12", BOB, POWER, 60),
        ("1", BOB, {"users": {BOB: "70"}}, 70),
        ("9", BOB, {"users": {BOB: 70.9}}, 70),
    ],
)
def test_user_power_level(version: str, user: str, power: Any, expected: float) -> None:
    assert get_user_power_level(user, power, create(version)) == expected


def test_user_power_level_v12_additional_creator_and_explicit_version() -> None:
    event = create("12", additional_creators=[BOB])
    assert get_user_power_level(BOB, {"users": {}}, event) == math.inf
    # the explicit room version wins over content.room_version
    assert get_user_power_level(BOB, {"users": {}}, event, room_version="11") == 0


@pytest.mark.parametrize(
    ("version", "power"),
    [("10", {"users": {BOB: "60"}}), ("1", {"users": {BOB: "x"}}), ("1", {"users": []})],
)
def test_user_power_level_invalid(version: str, power: Any) -> None:
    with pytest.raises(InvalidPowerLevel):
        get_user_power_level(BOB, power, create(version))


def test_unknown_room_version() -> None:
    with pytest.raises(UnsupportedRoomVersion):
        get_user_power_level(BOB, None, create("10"), room_version="99")


@pytest.mark.parametrize(
    ("content", "name", "default", "expected"),
    [
        (None, "ban", 50, 50),
        ({}, "kick", 50, 50),
        ({"kick": 10}, "kick", 50, 10),
        ({"kick": None}, "kick", 50, 50),
        ({"invite": "20"}, "invite", 0, 20),
    ],
)
def test_named_level(content: Any, name: str, default: int, expected: int) -> None:
    assert get_named_level(content, name, default) == expected


@pytest.mark.parametrize(
    ("etype", "state_key", "content", "expected"),
    [
        ("m.room.message", None, None, 0),  # events_default 0
        ("m.room.topic", "", None, 50),  # state_default 50, even without the event
        ("m.room.topic", "", {"state_default": 10}, 10),
        ("m.room.message", None, {"events_default": 20}, 20),
        ("m.room.topic", "", {"events": {"m.room.topic": 5}, "state_default": 90}, 5),
        ("m.room.message", None, {"events": {"m.room.message": 0}, "events_default": 90}, 0),
        ("m.room.message", "", {"events_default": 20}, 50),  # a state event of that type
        ("m.room.message", None, {"events": {"m.room.message": None}}, 0),
    ],
)
def test_send_level(etype: str, state_key: str | None, content: Any, expected: int) -> None:
    assert get_event_send_level(etype, state_key, content) == expected


@pytest.mark.parametrize(
    "content",
    [{"events": []}, {"events": None}, {"events": {"m.room.message": "x"}}],
)
def test_send_level_invalid(content: Any) -> None:
    with pytest.raises(InvalidPowerLevel):
        get_event_send_level("m.room.message", None, content)


def test_send_level_integer_only() -> None:
    with pytest.raises(InvalidPowerLevel):
        get_event_send_level("m.x", None, {"events_default": "1"}, integer_only=True)


def test_level_map() -> None:
    assert get_level_map({}, "users") == {}
    assert get_level_map({"users": {BOB: 1}}, "users") == {BOB: 1}
    with pytest.raises(InvalidPowerLevel):
        get_level_map({"users": None}, "users")


@pytest.mark.parametrize("version", ["1", "10", "11"])
def test_default_content_before_v12(version: str) -> None:
    content = default_power_levels_content(ALICE, version)
    assert content["users"] == {ALICE: 100}
    assert content["events"]["m.room.tombstone"] == 100  # type: ignore[index]
    assert content["state_default"] == 50


def test_default_content_v12() -> None:
    """v12: creators are not listed; tombstone above state_default (schema note)."""
    content = default_power_levels_content(ALICE, "12")
    assert content["users"] == {}
    events: Any = content["events"]
    assert events["m.room.tombstone"] > 50 == content["state_default"]
