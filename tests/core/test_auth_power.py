"""``m.room.power_levels`` auth rules, table-driven from the spec.

v1-v5: rule 10 (``v1-auth-rules.md``, ``v3-auth-rules.md``); v6-v11: rule 9 (v6 adds
``notifications``, v10 adds 9.1/9.2 integer-only); v12: rule 10 (10.4 creators).
Names below use the v10 numbering.
"""

from __future__ import annotations

from typing import Any

import pytest

from pocketserver.core.auth_rules import AuthError

from .authfixtures import ALICE, BOB, CAROL, DAVE, Room

ALL = [str(n) for n in range(1, 13)]
PRE_V10 = [str(n) for n in range(1, 10)]
V10_UP = ["10", "11", "12"]


def outcome(room: Room, content: Any, sender: str = ALICE) -> str:
    pdu = room.build("m.room.power_levels", sender, content, state_key="")
    try:
        room.check(pdu)
    except AuthError as exc:
        return exc.rule
    return "allow"


def fresh(version: str) -> Room:
    """A room without any power levels event yet (the creator may send the first)."""
    room = Room(version)
    room.send("m.room.join_rules", ALICE, {"join_rule": "public"}, state_key="")
    return room


def creator_users(room: Room) -> dict[str, Any]:
    return {} if room.rv.hydra else {ALICE: 100}


# -- 9.3 (v1: 10.1) users, 9.1/9.2 (v10+) integers ---------------------------------------

USERS_CASES = [
    # (users, ok before v10, ok from v10)
    ({BOB: 50}, True, True),
    ({BOB: "50"}, True, False),
    ({BOB: " +050 "}, True, False),
    ({BOB: 50.5}, True, False),
    ({BOB: True}, True, False),  # Synapse: int(True)
    ({BOB: "fifty"}, False, False),
    ({BOB: None}, False, False),
    ({BOB: [50]}, False, False),
    ({"bob": 50}, False, False),
    ({"@bob": 50}, False, False),
    ({"@bob:x": 50, "@weird localpart!:x": 1}, True, True),  # historical user IDs
    ([BOB], False, False),
    ("x", False, False),
    (None, False, False),
]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("users", "ok_old", "ok_new"), USERS_CASES)
def test_users_property(version: str, users: Any, ok_old: bool, ok_new: bool) -> None:
    """v1 10.1 / v10 9.3: users must map valid user IDs to integers (pre-v10: or strings)."""
    room = fresh(version)
    ok = ok_new if int(version) >= 10 else ok_old
    result = outcome(room, {"users": users})
    assert (result == "allow") == ok, result
    if not ok:
        assert result in ("power_levels.users", "power_levels.invalid")


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    "content",
    [
        {"ban": "50"},
        {"kick": 50.0},
        {"invite": None},
        {"events_default": True},
        {"events": {"m.room.name": "50"}},
        {"notifications": {"room": "50"}},
        {"events": []},
        {"notifications": 5},
    ],
)
def test_integer_only_from_v10(version: str, content: dict[str, Any]) -> None:
    """v10 9.1/9.2: named levels and events/notifications values must be integers.
    Before v10 the first power levels event is not validated beyond users."""
    room = fresh(version)
    expected = "power_levels.not_integer" if int(version) >= 10 else "allow"
    assert outcome(room, {"users": creator_users(room), **content}) == expected


# -- v12 10.4 creators ------------------------------------------------------------------


@pytest.mark.parametrize("version", ["11", "12"])
def test_creators_not_in_users(version: str) -> None:
    room = Room(version, create_content={"additional_creators": [CAROL]})
    expected = "power_levels.creators" if version == "12" else "allow"
    assert outcome(room, {"users": {ALICE: 100}}) == expected
    assert outcome(room, {"users": {CAROL: 100}}) == expected
    assert outcome(room, {"users": {BOB: 100}}) == "allow"


def test_v12_creator_has_infinite_power() -> None:
    room = Room("12").setup(users={BOB: 100})
    room.member(BOB, "join")
    content = {"users": {BOB: 10, CAROL: 9000}, "ban": 9000, "events": {"x": 9000}}
    assert outcome(room, content) == "allow"
    assert outcome(room, {"users": {BOB: 100}, "ban": 101}, sender=BOB) == "power_levels.change"


# -- 9.4-9.10: changes --------------------------------------------------------------------

CHANGE_CASES = [
    # (old extra content, new extra content, expected) -- BOB (level 50) sends
    ({}, {}, "allow"),
    ({}, {"ban": 50}, "allow"),  # added, not above the sender
    ({}, {"ban": 51}, "power_levels.change"),  # 9.5.2 new value higher
    ({"kick": 100}, {"kick": 10}, "power_levels.change"),  # 9.5.1 current value higher
    ({"kick": 100}, {}, "power_levels.change"),  # removed
    ({"kick": 100}, {"kick": 100}, "allow"),  # unchanged
    ({"redact": 40}, {"redact": 0}, "allow"),
    ({"state_default": 40}, {"state_default": 40}, "allow"),
    ({"state_default": 60}, {"state_default": 40}, "send.level"),  # rule 8 comes first
    ({"users_default": 0}, {"users_default": 50}, "allow"),
    ({"users_default": 0}, {"users_default": 51}, "power_levels.change"),
    ({"events": {"m.x": 100}}, {"events": {"m.x": 0}}, "power_levels.change"),  # 9.6
    ({"events": {"m.x": 100}}, {"events": {}}, "power_levels.change"),  # removed
    ({"events": {"m.x": 100}}, {"events": {"m.x": 100, "m.y": 50}}, "allow"),
    ({}, {"events": {"m.y": 51}}, "power_levels.change"),  # 9.7
    ({"events": {"m.y": 10}}, {"events": {"m.y": 50}}, "allow"),
    ({"users": {CAROL: 50}}, {"users": {CAROL: 0}}, "power_levels.users_change"),  # 9.8 equal
    ({"users": {CAROL: 60}}, {"users": {CAROL: 0}}, "power_levels.users_change"),
    ({"users": {CAROL: 49}}, {"users": {CAROL: 0}}, "allow"),
    ({"users": {CAROL: 49}}, {"users": {}}, "allow"),  # removed
    ({"users": {CAROL: 50}}, {"users": {}}, "power_levels.users_change"),
    ({}, {"users": {CAROL: 50}}, "allow"),  # 9.9: not greater than own
    ({}, {"users": {CAROL: 51}}, "power_levels.users_change"),
    ({}, {"users": {BOB: 10}}, "allow"),  # own entry may be lowered
    ({}, {"users": {BOB: 51}}, "power_levels.users_change"),  # but not raised
]


def change_outcome(version: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    room = Room(version)
    users = {**creator_users(room), BOB: 50}
    old_users = {**users, **old.get("users", {})}
    old_content = {**old, "users": old_users}
    room.send("m.room.power_levels", ALICE, old_content, state_key="")
    room.force_member(BOB, "join")
    new_users = {**users, **new.get("users", {})}
    if "users" in new and not new["users"]:  # "removed" cases drop CAROL
        new_users.pop(CAROL, None)
    new_content = {**new, "users": new_users}
    if "users" in old and "users" not in new:
        new_content["users"] = {**new_users, **old["users"]}
    return outcome(room, new_content, sender=BOB)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("old", "new", "expected"), CHANGE_CASES)
def test_changes(version: str, old: dict[str, Any], new: dict[str, Any], expected: str) -> None:
    assert change_outcome(version, old, new) == expected


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("old", "new", "checked"),
    [
        ({"notifications": {"room": 100}}, {"notifications": {"room": 0}}, True),
        ({}, {"notifications": {"room": 51}}, True),
        ({"notifications": {"room": 0}}, {"notifications": {"room": 50}}, False),
    ],
)
def test_notifications_from_v6(
    version: str, old: dict[str, Any], new: dict[str, Any], checked: bool
) -> None:
    """v6 ("now include a notifications property"): 9.6/9.7 cover notifications."""
    expected = "power_levels.change" if checked and int(version) >= 6 else "allow"
    assert change_outcome(version, old, new) == expected


@pytest.mark.parametrize("version", PRE_V10)
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({"ban": "50"}, {"ban": 50}, "allow"),  # "50" == 50: not a change
        ({"ban": 50}, {"ban": " 050 "}, "allow"),
        ({"users": {CAROL: "49"}}, {"users": {CAROL: 49.9}}, "allow"),
        ({"kick": "100"}, {"kick": 0}, "power_levels.change"),
        ({"ban": "lots"}, {"ban": 0}, "power_levels.invalid"),  # unparseable current value
        ({"events": {"m.x": "x"}}, {"events": {"m.x": "x"}}, "power_levels.invalid"),
        ({"ban": None}, {"ban": None}, "power_levels.invalid"),  # Synapse: int(None) fails
    ],
)
def test_stringy_and_floaty_values(
    version: str, old: dict[str, Any], new: dict[str, Any], expected: str
) -> None:
    """v1-stringy-power-levels / v1-floaty-power-levels: compared as integers."""
    assert change_outcome(version, old, new) == expected


@pytest.mark.parametrize("version", ["1", "9"])
def test_garbage_level_rejects_only_when_read(version: str) -> None:
    """A first power levels event may hold garbage before v10; it rejects what reads it."""
    room = fresh(version)
    room.send(
        "m.room.power_levels",
        ALICE,
        {"users": {ALICE: 100}, "events": {"m.bad": "x"}, "kick": "x"},
        state_key="",
    )
    room.member(BOB, "join")
    room.send("m.room.message", BOB, {})
    room.send("m.good", ALICE, {})
    bad = room.build("m.bad", ALICE, {})
    with pytest.raises(AuthError) as info:
        room.check(bad)
    assert info.value.rule == "power_levels.invalid"
    kick = room.build("m.room.member", ALICE, {"membership": "leave"}, state_key=BOB)
    with pytest.raises(AuthError) as info:
        room.check(kick)
    assert info.value.rule == "power_levels.invalid"


@pytest.mark.parametrize("version", ALL)
def test_first_power_levels_by_anyone_with_the_send_level(version: str) -> None:
    """9.4: no previous power levels -> allow (after rules 7-8: state level 50 applies)."""
    room = fresh(version)
    room.member(BOB, "join")
    assert outcome(room, {"users": {BOB: 100}}, sender=BOB) == "send.level"
    room.force_member(DAVE, "join")
    # the creator (100 without power levels; v12: infinite) may drop herself
    assert outcome(room, {"users": {DAVE: 100, BOB: 100}}) == "allow"
