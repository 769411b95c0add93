"""Auth rules other than membership and power levels, table-driven from the spec.

Rule numbers in the test IDs are those of ``content/rooms/fragments/v1-auth-rules.md``
(v1 numbering) unless stated; the version pages renumber them (see
``pocketserver/core/auth_rules.py``).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pocketserver.core.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_against_state,
)

from .authfixtures import ALICE, BOB, CAROL, DAVE, Room

ALL = [str(n) for n in range(1, 13)]
PRE_V12 = [str(n) for n in range(1, 12)]


def rejects(rule: str, room: Room, pdu: dict[str, Any], auth: Any = None) -> None:
    with pytest.raises(AuthError) as info:
        check_auth(room.version, pdu, room.auth_map(pdu) if auth is None else auth)
    assert info.value.rule == rule, str(info.value)


def joined_room(version: str, **kw: Any) -> Room:
    room = Room(version).setup(**kw)
    room.member(BOB, "join")
    return room


# -- rule 1: m.room.create ------------------------------------------------------------


def create_pdu(version: str, **changes: Any) -> dict[str, Any]:
    pdu = copy.deepcopy(Room(version, creator_join=False).create)
    for key, value in changes.items():
        if value is None:
            pdu.pop(key, None)
        else:
            pdu[key] = value
    return pdu


@pytest.mark.parametrize("version", ALL)
def test_create_allowed(version: str) -> None:
    check_auth(version, create_pdu(version), {})


@pytest.mark.parametrize("version", ALL)
def test_create_with_prev_events_rejected(version: str) -> None:
    """Rule 1.1: "If it has any prev_events, reject"."""
    room = Room(version)
    prev = room.build("x", ALICE, {})["prev_events"]  # cites the creator's join
    assert prev
    with pytest.raises(AuthError) as info:
        check_auth(version, create_pdu(version, prev_events=prev), {})
    assert info.value.rule == "create.prev_events"


@pytest.mark.parametrize(
    ("version", "room_id"),
    [(v, "!room:other.example") for v in PRE_V12] + [("12", "!abc")],
)
def test_create_room_id(version: str, room_id: str) -> None:
    """Rule 1.2: v1-v11 room ID domain must be the sender's; v12: no room_id at all."""
    with pytest.raises(AuthError) as info:
        check_auth(version, create_pdu(version, room_id=room_id), {})
    assert info.value.rule == "create.room_id"


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("room_version", ["99", 3, None, ["1"]])
def test_create_unknown_room_version(version: str, room_version: Any) -> None:
    """Rule 1.3: a present but unrecognised content.room_version rejects."""
    pdu = create_pdu(version)
    pdu["content"]["room_version"] = room_version
    with pytest.raises(AuthError) as info:
        check_auth(version, pdu, {})
    assert info.value.rule == "create.room_version"


@pytest.mark.parametrize("version", ALL)
def test_create_room_version_absent_means_1(version: str) -> None:
    pdu = create_pdu(version)
    del pdu["content"]["room_version"]
    check_auth(version, pdu, {})


@pytest.mark.parametrize("version", ALL)
def test_create_without_creator(version: str) -> None:
    """Rule 1.4 (v1-v10): content.creator is required; v11 removes the rule."""
    pdu = create_pdu(version)
    pdu["content"].pop("creator", None)
    if int(version) >= 11:
        check_auth(version, pdu, {})
    else:
        with pytest.raises(AuthError) as info:
            check_auth(version, pdu, {})
        assert info.value.rule == "create.creator"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ([BOB, CAROL], True),
        ([], True),
        ([BOB, "@x:[::1]:8448"], True),
        (BOB, False),
        ([BOB, 3], False),
        (["bob"], False),
        (["@bob"], False),
        (["@bob:bad_host!"], False),
        (["@" + "a" * 250 + ":b.example"], False),
        ({"@bob:b.example": 1}, False),
    ],
)
def test_create_additional_creators(value: Any, ok: bool) -> None:
    """v12 rule 1.4: additional_creators must be an array of valid user IDs; not v11."""
    pdu = create_pdu("12")
    pdu["content"]["additional_creators"] = value
    check_auth("11", {**create_pdu("11"), "content": pdu["content"]}, {})
    if ok:
        check_auth("12", pdu, {})
    else:
        with pytest.raises(AuthError) as info:
            check_auth("12", pdu, {})
        assert info.value.rule == "create.additional_creators"


# -- rule 2: the event's auth_events ------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_auth_event_listed_twice(version: str) -> None:
    """Rule 2.1: duplicate entries (the same event cited twice)."""
    room = joined_room(version)
    pdu = room.build("m.room.message", BOB, {}, auth=room.listed(room.build("x", BOB, {})) * 2)
    rejects("auth_events.duplicate", room, pdu)


@pytest.mark.parametrize("version", ALL)
def test_auth_events_two_for_one_key(version: str) -> None:
    """Rule 2.1: two power levels events cited -> a (type, state_key) duplicate."""
    room = joined_room(version)
    old_power = room.state[("m.room.power_levels", "")]
    room.send(
        "m.room.power_levels",
        ALICE,
        {"users": room.state_event("m.room.power_levels")["content"]["users"], "ban": 60},
        state_key="",
    )
    pdu = room.build("m.room.message", BOB, {})
    pdu = room.build("m.room.message", BOB, {}, auth=[*room.listed(pdu), old_power])
    rejects("auth_events.duplicate", room, pdu)


@pytest.mark.parametrize("version", ALL)
def test_auth_event_not_supplied(version: str) -> None:
    """A cited auth event missing from the mapping cannot be checked: rejected."""
    room = joined_room(version)
    pdu = room.build("m.room.message", BOB, {})
    auth = room.auth_map(pdu)
    del auth[("m.room.power_levels", "")]
    rejects("auth_events.duplicate", room, pdu, auth)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    "extra", [("m.room.topic", ""), ("m.room.member", CAROL), ("m.room.join_rules", "")]
)
def test_unexpected_auth_event(version: str, extra: tuple[str, str]) -> None:
    """Rule 2.2: entries not chosen by the auth events selection algorithm."""
    room = joined_room(version)
    if extra[0] == "m.room.member":
        room.member(CAROL, "join")
    else:
        room.send(extra[0], ALICE, {"topic": "t"}, state_key="")
    pdu = room.build("m.room.message", BOB, {})
    pdu = room.build("m.room.message", BOB, {}, auth=[*room.listed(pdu), room.state[extra]])
    rejects("auth_events.unexpected", room, pdu)


def test_v12_create_event_cited() -> None:
    """v12 rule 3.2: the create event MUST NOT be selected."""
    room = joined_room("12")
    pdu = room.build("m.room.message", BOB, {})
    pdu = room.build("m.room.message", BOB, {}, auth=[*room.listed(pdu), room.create["event_id"]])
    rejects("auth_events.unexpected", room, pdu)


@pytest.mark.parametrize("version", ALL)
def test_no_create_event(version: str) -> None:
    """Rule 2.4 (v1-v11): no m.room.create among the entries; v12: none implied."""
    room = joined_room(version)
    pdu = room.build("m.room.message", BOB, {})
    if int(version) < 12:
        pdu = room.build("m.room.message", BOB, {}, auth=room.listed(pdu)[1:])
        assert ("m.room.create", "") not in room.auth_map(pdu)
        rejects("auth_events.no_create", room, pdu)
    else:
        auth = room.auth_map(pdu)
        del auth[("m.room.create", "")]
        rejects("auth_events.no_create", room, pdu, auth)


@pytest.mark.parametrize("version", ALL)
def test_auth_event_from_other_room(version: str) -> None:
    """Rule 2.5: an auth event whose room_id differs."""
    room = joined_room(version)
    pdu = room.build("m.room.message", BOB, {})
    auth = room.auth_map(pdu)
    member = dict(auth[("m.room.member", BOB)], room_id="!other:a.example")
    auth[("m.room.member", BOB)] = member
    rejects("auth_events.room", room, pdu, auth)


def test_v12_room_id_must_be_create_id() -> None:
    """v12 rule 2: room_id is the create event's ID with sigil ``!``."""
    room = joined_room("12")
    other = Room("12", creator=DAVE)
    pdu = room.build("m.room.message", BOB, {})
    auth = room.auth_map(pdu)
    auth[("m.room.create", "")] = other.create
    rejects("room_id.create", room, pdu, auth)
    # Without an ``event_id`` field the ID is computed from the reference hash.
    auth[("m.room.create", "")] = {k: v for k, v in room.create.items() if k != "event_id"}
    check_auth("12", pdu, auth)


@pytest.mark.parametrize("version", ["3", "4", "10"])
def test_create_event_id_computed_when_absent(version: str) -> None:
    """v3+: the creator's first join compares prev_events with the hashed create ID."""
    room = Room(version, creator_join=False)
    pdu = room.build("m.room.member", ALICE, {"membership": "join"}, state_key=ALICE)
    auth = {
        k: {f: x for f, x in v.items() if f != "event_id"} for k, v in room.auth_map(pdu).items()
    }
    check_auth(version, pdu, auth)


@pytest.mark.parametrize("version", ALL)
def test_mapping_key_must_match_event(version: str) -> None:
    room = joined_room(version)
    pdu = room.build("m.room.message", BOB, {})
    auth = room.auth_map(pdu)
    auth[("m.room.member", BOB)] = room.state_event("m.room.member", ALICE)
    rejects("auth_events.malformed", room, pdu, auth)


@pytest.mark.parametrize("version", ALL)
def test_against_state_ignores_extra_entries(version: str) -> None:
    room = joined_room(version)
    room.send("m.room.topic", ALICE, {"topic": "t"}, state_key="")
    pdu = room.build("m.room.message", BOB, {})
    state = {k: room.events[i] for k, i in room.state.items()}
    check_auth_against_state(version, pdu, state)
    with pytest.raises(AuthError):
        check_auth(version, pdu, state)


# -- rule 3: m.federate ---------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("federate", "sender", "ok"),
    [
        (False, BOB, False),
        (False, DAVE, True),  # same server as the creator
        (True, BOB, True),
        (None, BOB, True),
        ("false", BOB, False),  # Synapse: anything but literal true is "false"
    ],
)
def test_m_federate(version: str, federate: Any, sender: str, ok: bool) -> None:
    """Rule 3: m.federate false and the sender's server is not the creator's."""
    extra = {} if federate is None else {"m.federate": federate}
    room = Room(version, create_content=extra).setup()
    room.force_member(sender, "join")
    pdu = room.build("m.room.message", sender, {})
    if ok:
        room.check(pdu)
    else:
        rejects("federate", room, pdu)


# -- rule 4 (v1-v5): m.room.aliases ---------------------------------------------------


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("state_key", "ok"), [("b.example", True), ("a.example", False), ("", False)]
)
def test_aliases(version: str, state_key: str, ok: bool) -> None:
    """v1-v5 rule 4: allowed iff state_key is the sender's domain, member or not.

    v6+ ("Rule 4 ... is removed"): ordinary state event rules (sender must be joined).
    """
    room = Room(version).setup()
    pdu = room.build("m.room.aliases", BOB, {"aliases": []}, state_key=state_key)
    if int(version) >= 6:
        rejects("sender.not_joined", room, pdu)
    elif ok:
        room.check(pdu)
    else:
        rejects("aliases.state_key", room, pdu)


def test_aliases_without_state_key_v1() -> None:
    room = Room("1").setup()
    rejects("aliases.state_key", room, room.build("m.room.aliases", BOB, {}))


# -- rules 6-9: other events ------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("membership", [None, "invite", "leave", "ban"])
def test_sender_must_be_joined(version: str, membership: str | None) -> None:
    """v1 rule 6: "If the sender's current membership state is not join, reject"."""
    room = Room(version).setup()
    if membership:
        room.force_member(BOB, membership)
    rejects("sender.not_joined", room, room.build("m.room.message", BOB, {}))


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("invite", "ok"), [(0, True), (50, False), (None, True)])
def test_third_party_invite_event(version: str, invite: int | None, ok: bool) -> None:
    """v1 rule 7: allowed iff the sender has the invite level (the send level is not used)."""
    power: dict[str, Any] = {"events": {"m.room.third_party_invite": 100}}
    if invite is not None:
        power["invite"] = invite
    room = joined_room(version, power=power)
    pdu = room.build("m.room.third_party_invite", BOB, {}, state_key="tok")
    if ok:
        room.check(pdu)
    else:
        rejects("third_party_invite.level", room, pdu)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("power", "etype", "state_key", "ok"),
    [
        ({}, "m.room.message", None, True),
        ({}, "m.room.topic", "", False),  # state_default 50
        ({"state_default": 0}, "m.room.topic", "", True),
        ({"events_default": 10}, "m.room.message", None, False),
        ({"events": {"m.room.message": 10}}, "m.room.message", None, False),
        ({"events": {"m.room.topic": 0}}, "m.room.topic", "", True),
        ({"events": {"m.room.topic": 0}, "users_default": 5}, "m.room.topic", "", True),
        ({"users_default": 50}, "m.room.topic", "", True),
        ({"state_default": 0}, "m.room.power_levels", "", True),
    ],
)
def test_required_power_level(
    version: str, power: dict[str, Any], etype: str, state_key: str | None, ok: bool
) -> None:
    """v1 rule 8: the event type's required power level above the sender's -> reject."""
    room = joined_room(version, power=power)
    content: Any = {}
    if etype == "m.room.power_levels":  # unchanged content
        content = room.state_event("m.room.power_levels")["content"]
    pdu = room.build(etype, BOB, content, state_key=state_key)
    if ok:
        room.check(pdu)
    else:
        rejects("send.level", room, pdu)


@pytest.mark.parametrize("version", ALL)
def test_no_power_levels_event(version: str) -> None:
    """Without power levels: creator 100 (v12: infinite), others 0, state events need 50."""
    room = Room(version)
    room.send("m.room.join_rules", ALICE, {"join_rule": "public"}, state_key="")
    room.member(BOB, "join")
    room.send("m.room.message", BOB, {})
    room.send("m.room.topic", ALICE, {}, state_key="")
    rejects("send.level", room, room.build("m.room.topic", BOB, {}, state_key=""))


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("state_key", "ok"), [(BOB, True), (CAROL, False), ("@", False), ("x@", True)]
)
def test_user_state_key(version: str, state_key: str, ok: bool) -> None:
    """v1 rule 9: a state_key starting with ``@`` must be the sender."""
    room = joined_room(version, power={"state_default": 0})
    pdu = room.build("m.custom", BOB, {}, state_key=state_key)
    if ok:
        room.check(pdu)
    else:
        rejects("state_key.user", room, pdu)


# -- rule 11 (v1, v2): m.room.redaction ----------------------------------------------


@pytest.mark.parametrize("version", ["1", "2", "3", "11"])
@pytest.mark.parametrize(
    ("redact_level", "target_server", "ok_v1"),
    [(0, "a.example", True), (100, "b.example", True), (100, "a.example", False)],
)
def test_redaction(version: str, redact_level: int, target_server: str, ok_v1: bool) -> None:
    """v1 rule 11: redact level, or the same event ID domain; v3+ ("Handling
    redactions"): the redact level is not considered by the auth rules."""
    room = joined_room(version, power={"redact": redact_level})
    target = f"$target:{target_server}"
    if room.rv.redacts_in_content:
        pdu = room.build("m.room.redaction", BOB, {"redacts": target})
    else:
        pdu = room.build("m.room.redaction", BOB, {}, extra={"redacts": target})
    if ok_v1 or int(version) >= 3:
        room.check(pdu)
    else:
        rejects("redaction.level", room, pdu)


@pytest.mark.parametrize("version", ["1", "5", "10"])
def test_redaction_send_level(version: str) -> None:
    """v3+: redactions are still subject to the required power level (rule 8)."""
    room = joined_room(version, power={"events": {"m.room.redaction": 50}})
    rejects("send.level", room, room.build("m.room.redaction", BOB, {}, extra={"redacts": "$x"}))


# -- format and robustness ----------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"type": None},
        {"sender": "bob"},
        {"sender": 5},
        {"content": []},
        {"state_key": 3},
        {"auth_events": "x"},
        {"auth_events": [3]},
    ],
)
def test_malformed_event(change: dict[str, Any]) -> None:
    room = joined_room("10")
    pdu = {**room.build("m.room.message", BOB, {}), **change}
    rejects("format", room, pdu, room.auth_map(room.build("m.room.message", BOB, {})))


def test_malformed_prev_events_when_read() -> None:
    with pytest.raises(AuthError) as info:
        check_auth("10", create_pdu("10", prev_events=[3]), {})
    assert info.value.rule == "format"


@pytest.mark.parametrize("room_version", ["13", 10, None])
def test_unknown_room_version(room_version: Any) -> None:
    room = joined_room("10")
    pdu = room.build("m.room.message", BOB, {})
    with pytest.raises(AuthError) as info:
        check_auth(room_version, pdu, room.auth_map(pdu))
    assert info.value.rule == "room_version"


# -- auth events selection --------------------------------------------------------------

C, P, J = ("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.join_rules", "")


def M(user: str) -> tuple[str, str]:
    return ("m.room.member", user)


TOKEN_INVITE = {"membership": "invite", "third_party_invite": {"signed": {"token": "t"}}}
VIA = {"membership": "join", "join_authorised_via_users_server": CAROL}


@pytest.mark.parametrize(
    ("version", "etype", "state_key", "content", "expected"),
    [
        ("10", "m.room.create", "", {}, []),
        ("10", "m.room.message", None, {}, [C, P, M(BOB)]),
        ("12", "m.room.message", None, {}, [P, M(BOB)]),
        ("12", "m.room.topic", "", {}, [P, M(BOB)]),
        ("10", "m.room.member", BOB, {"membership": "join"}, [C, P, M(BOB), J]),
        ("12", "m.room.member", BOB, {"membership": "join"}, [P, M(BOB), J]),
        ("10", "m.room.member", CAROL, {"membership": "invite"}, [C, P, M(BOB), M(CAROL), J]),
        ("7", "m.room.member", BOB, {"membership": "knock"}, [C, P, M(BOB), J]),
        ("10", "m.room.member", CAROL, {"membership": "ban"}, [C, P, M(BOB), M(CAROL)]),
        ("10", "m.room.member", BOB, {"membership": "leave"}, [C, P, M(BOB)]),
        (
            "10",
            "m.room.member",
            CAROL,
            TOKEN_INVITE,
            [C, P, M(BOB), M(CAROL), J, ("m.room.third_party_invite", "t")],
        ),
        ("10", "m.room.member", BOB, VIA, [C, P, M(BOB), J, M(CAROL)]),
        ("8", "m.room.member", BOB, VIA, [C, P, M(BOB), J, M(CAROL)]),
        ("7", "m.room.member", BOB, VIA, [C, P, M(BOB), J]),
        ("10", "m.room.member", BOB, {**VIA, "membership": "invite"}, [C, P, M(BOB), J]),
        (
            "10",
            "m.room.member",
            CAROL,
            {"membership": "invite", "third_party_invite": 5},
            [C, P, M(BOB), M(CAROL), J],
        ),
        ("10", "m.room.member", BOB, [], [C, P, M(BOB)]),
    ],
)
def test_auth_types_for_event(
    version: str, etype: str, state_key: str | None, content: Any, expected: list[Any]
) -> None:
    """server-server-api.md "Auth events selection"."""
    event: dict[str, Any] = {"type": etype, "sender": BOB, "content": content}
    if state_key is not None:
        event["state_key"] = state_key
    assert auth_types_for_event(version, event) == expected


def test_auth_types_for_malformed_event() -> None:
    assert auth_types_for_event("10", {"type": 5}) == []
    assert auth_types_for_event("10", {"type": "m.room.member", "sender": 5}) == [C, P]
    with pytest.raises(AuthError):
        auth_types_for_event("nope", {})
