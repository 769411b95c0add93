"""``m.room.member`` auth rules, table-driven from the spec.

Sub-rule numbers use the v10 numbering (x.3 join, x.4 invite, x.5 leave, x.6 ban,
x.7 knock); in v1-v7 join is x.2, invite x.3 and so on (``v8.md``: "new points
... are added (Rule 4.2 and 4.3.5)").
"""

from __future__ import annotations

from typing import Any

import pytest
from nacl.signing import SigningKey

from pocketserver.core.auth_rules import AuthError
from pocketserver.core.crypto import encode_base64, encode_canonical_json

from .authfixtures import ALICE, BOB, CAROL, DAVE, Room

ALL = [str(n) for n in range(1, 13)]


def outcome(room: Room, pdu: dict[str, Any]) -> str:
    try:
        room.check(pdu)
    except AuthError as exc:
        return exc.rule
    return "allow"


def member_pdu(
    room: Room, sender: str, target: str, membership: Any, **content: Any
) -> dict[str, Any]:
    return room.build(
        "m.room.member", sender, {"membership": membership, **content}, state_key=target
    )


# -- x.1 shape, x.8 unknown ---------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_member_shape(version: str) -> None:
    """x.1: no state_key or no membership -> reject; x.8: unknown membership."""
    room = Room(version).setup()
    assert outcome(room, room.build("m.room.member", BOB, {"membership": "join"})) == "member.shape"
    assert outcome(room, room.build("m.room.member", BOB, {}, state_key=BOB)) == "member.shape"
    assert outcome(room, member_pdu(room, BOB, BOB, "dance")) == "member.unknown"
    assert outcome(room, member_pdu(room, BOB, BOB, ["join"])) == "member.unknown"
    knock = "member.knock.rule" if int(version) >= 7 else "member.unknown"
    assert outcome(room, member_pdu(room, BOB, BOB, "knock")) == knock


# -- x.3.1 the creator's first join -----------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_creator_first_join(version: str) -> None:
    """x.3.1: the only previous event is the create event and state_key is the creator."""
    room = Room(version, creator_join=False)
    assert outcome(room, member_pdu(room, ALICE, ALICE, "join")) == "allow"
    # anyone may send it (the rule does not look at the sender) ...
    assert outcome(room, member_pdu(room, BOB, ALICE, "join")) == "allow"
    # ... but only for the creator
    assert outcome(room, member_pdu(room, BOB, BOB, "join")) == "member.join.not_invited"
    # ... and only right after the create event
    topic = room.add(room.build("m.room.topic", ALICE, {}, state_key=""))
    pdu = member_pdu(room, ALICE, ALICE, "join")
    assert pdu["prev_events"]
    assert outcome(room, pdu) == "member.join.not_invited"
    both = room.build(
        "m.room.member",
        ALICE,
        {"membership": "join"},
        state_key=ALICE,
        prev=[room.create["event_id"], topic["event_id"]],
    )
    assert outcome(room, both) == "member.join.not_invited"


@pytest.mark.parametrize(("version", "creator_ok"), [("10", BOB), ("11", ALICE), ("12", ALICE)])
def test_creator_is_content_creator_before_v11(version: str, creator_ok: str) -> None:
    """v1-v10: content.creator; v11 ("changed-in v11"): the create event's sender."""
    room = Room(version, create_content={"creator": BOB}, creator_join=False)
    other = ALICE if creator_ok == BOB else BOB
    assert outcome(room, member_pdu(room, creator_ok, creator_ok, "join")) == "allow"
    assert outcome(room, member_pdu(room, other, other, "join")) == "member.join.not_invited"


def test_v12_additional_creator_has_no_first_join() -> None:
    """v12 x.3.1 names "the sender of the m.room.create" only."""
    room = Room("12", create_content={"additional_creators": [BOB]}, creator_join=False)
    assert outcome(room, member_pdu(room, BOB, BOB, "join")) == "member.join.not_invited"


# -- x.3 join ---------------------------------------------------------------------------

JOIN_CASES = [
    # (join_rule, current membership of the joiner, expected, min version, max version)
    ("public", None, "allow", 1, 12),
    ("public", "leave", "allow", 1, 12),
    ("public", "ban", "member.join.banned", 1, 12),
    ("invite", "invite", "allow", 1, 12),
    ("invite", "join", "allow", 1, 12),
    ("invite", None, "member.join.not_invited", 1, 12),
    ("invite", "leave", "member.join.not_invited", 1, 12),
    ("knock", "invite", "allow", 7, 12),
    ("knock", None, "member.join.not_invited", 7, 12),
    ("knock", "invite", "member.join.rule", 1, 6),
    ("private", "invite", "member.join.rule", 1, 12),
    ("restricted", "invite", "allow", 8, 12),
    ("restricted", "join", "allow", 8, 12),
    ("restricted", "invite", "member.join.rule", 1, 7),
    ("knock_restricted", "invite", "allow", 10, 12),
    ("knock_restricted", "invite", "member.join.rule", 1, 9),
    (None, "invite", "allow", 1, 12),  # no join rules event: Synapse treats it as invite
    (None, None, "member.join.not_invited", 1, 12),
]


@pytest.mark.parametrize(
    ("version", "rule", "current", "expected"),
    [(str(v), r, c, e) for r, c, e, low, high in JOIN_CASES for v in range(low, high + 1)],
)
def test_join(version: str, rule: str | None, current: str | None, expected: str) -> None:
    """x.3.2-x.3.7."""
    room = Room(version).setup(join_rule=rule)
    if current:
        room.force_member(BOB, current)
    assert outcome(room, member_pdu(room, BOB, BOB, "join")) == expected


@pytest.mark.parametrize("version", ALL)
def test_join_for_someone_else(version: str) -> None:
    """x.3.2: sender must be the state_key."""
    room = Room(version).setup()
    assert outcome(room, member_pdu(room, ALICE, BOB, "join")) == "member.join.not_self"


RESTRICTED_CASES = [
    # (authorising user, its membership, its level, invite level, expected)
    (CAROL, "join", 0, 0, "allow"),
    (CAROL, "join", 50, 50, "allow"),
    (CAROL, "join", 10, 50, "member.join.restricted"),
    (CAROL, "invite", 100, 0, "member.join.restricted"),
    (CAROL, None, 100, 0, "member.join.restricted"),
    (None, None, 0, 0, "member.join.restricted"),
    (5, None, 0, 0, "member.join.restricted"),
]


@pytest.mark.parametrize("version", ["8", "9", "10", "11", "12"])
@pytest.mark.parametrize("rule", ["restricted", "knock_restricted"])
@pytest.mark.parametrize(
    ("via", "via_membership", "via_level", "invite", "expected"), RESTRICTED_CASES
)
def test_restricted_join(
    version: str,
    rule: str,
    via: Any,
    via_membership: str | None,
    via_level: int,
    invite: int,
    expected: str,
) -> None:
    """x.3.5.2: the authorising user must be joined and able to invite."""
    if rule == "knock_restricted" and int(version) < 10:
        expected = "member.join.rule"
    room = Room(version).setup(join_rule=rule, users={CAROL: via_level}, power={"invite": invite})
    if via_membership:
        room.force_member(CAROL, via_membership)
    extra = {} if via is None else {"join_authorised_via_users_server": via}
    assert outcome(room, member_pdu(room, BOB, BOB, "join", **extra)) == expected


def test_restricted_join_v12_creator_authorises() -> None:
    """v12: a creator (infinite level) can authorise whatever the invite level."""
    room = Room("12").setup(join_rule="restricted", power={"invite": 100})
    pdu = member_pdu(room, BOB, BOB, "join", join_authorised_via_users_server=ALICE)
    assert outcome(room, pdu) == "allow"


# -- x.4 invite ---------------------------------------------------------------------------

INVITE_CASES = [
    # (sender membership, target membership, invite level, expected)
    ("join", None, 0, "allow"),
    ("join", "leave", 0, "allow"),
    ("join", "invite", 0, "allow"),
    ("join", "knock", 0, "allow"),
    ("invite", None, 0, "member.invite.sender"),
    (None, None, 0, "member.invite.sender"),
    ("join", "join", 0, "member.invite.target"),
    ("join", "ban", 0, "member.invite.target"),
    ("join", None, 10, "member.invite.level"),
]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("sender_m", "target_m", "invite", "expected"), INVITE_CASES)
def test_invite(
    version: str, sender_m: str | None, target_m: str | None, invite: int, expected: str
) -> None:
    """x.4.2-x.4.5."""
    room = Room(version).setup(power={"invite": invite})
    if sender_m:
        room.force_member(BOB, sender_m)
    if target_m:
        room.force_member(CAROL, target_m)
    assert outcome(room, member_pdu(room, BOB, CAROL, "invite")) == expected


KEY = SigningKey(bytes(range(32)))
WRONG_KEY = SigningKey(bytes(range(1, 33)))


def signed_block(mxid: Any, token: Any, key: SigningKey = KEY) -> dict[str, Any]:
    signed: dict[str, Any] = {"mxid": mxid, "token": token}
    sig = key.sign(encode_canonical_json(signed)).signature
    signed["signatures"] = {"id.example": {"ed25519:0": encode_base64(sig)}}
    return signed


def third_party_room(version: str, content: dict[str, Any], inviter: str = ALICE) -> Room:
    room = Room(version).setup(join_rule="invite")
    room.add(room.build("m.room.third_party_invite", inviter, content, state_key="tok"))
    return room


PUBLIC = encode_base64(bytes(KEY.verify_key))
THIRD_PARTY_CASES = [
    # (invite event content, third_party_invite, expected)
    ({"public_key": PUBLIC}, {"signed": signed_block(CAROL, "tok")}, "allow"),
    ({"public_keys": [{"public_key": PUBLIC}]}, {"signed": signed_block(CAROL, "tok")}, "allow"),
    (
        {"public_key": "bm90IGEga2V5", "public_keys": [{"public_key": PUBLIC}]},
        {"signed": signed_block(CAROL, "tok")},
        "allow",
    ),
    ({"public_key": PUBLIC}, {}, "member.invite.3pid"),  # x.4.1.2
    ({"public_key": PUBLIC}, {"signed": "x"}, "member.invite.3pid"),
    ({"public_key": PUBLIC}, {"signed": {"mxid": CAROL}}, "member.invite.3pid"),  # x.4.1.3
    ({"public_key": PUBLIC}, {"signed": signed_block(DAVE, "tok")}, "member.invite.3pid"),
    ({"public_key": PUBLIC}, {"signed": signed_block(CAROL, "nope")}, "member.invite.3pid"),
    ({"public_key": PUBLIC}, {"signed": signed_block(CAROL, 5)}, "member.invite.3pid"),
    (
        {"public_key": PUBLIC},
        {"signed": signed_block(CAROL, "tok", WRONG_KEY)},
        "member.invite.3pid",
    ),
    ({}, {"signed": signed_block(CAROL, "tok")}, "member.invite.3pid"),  # x.4.1.8
    (
        {"public_key": 5, "public_keys": "x"},
        {"signed": signed_block(CAROL, "tok")},
        "member.invite.3pid",
    ),
    ({"public_key": PUBLIC}, "not an object", "member.invite.3pid"),
]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("invite_content", "tpi", "expected"), THIRD_PARTY_CASES)
def test_third_party_invite(version: str, invite_content: Any, tpi: Any, expected: str) -> None:
    """x.4.1.1-x.4.1.8."""
    room = third_party_room(version, invite_content)
    pdu = member_pdu(room, ALICE, CAROL, "invite", third_party_invite=tpi)
    assert outcome(room, pdu) == expected


@pytest.mark.parametrize("version", ["1", "12"])
def test_third_party_invite_sender_and_ban(version: str) -> None:
    """x.4.1.1 target banned; x.4.1.6 sender of the 3pid invite; membership not needed."""
    room = third_party_room(version, {"public_key": PUBLIC}, inviter=BOB)
    tpi = {"signed": signed_block(CAROL, "tok")}
    assert outcome(room, member_pdu(room, ALICE, CAROL, "invite", third_party_invite=tpi)) == (
        "member.invite.3pid"
    )
    # BOB is not joined: the 3pid path does not require it (x.4.1 ends in allow/reject)
    assert outcome(room, member_pdu(room, BOB, CAROL, "invite", third_party_invite=tpi)) == "allow"
    room.force_member(CAROL, "ban")
    assert outcome(room, member_pdu(room, BOB, CAROL, "invite", third_party_invite=tpi)) == (
        "member.invite.3pid"
    )


# -- x.5 leave -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("current", "ok"),
    [
        ("join", True),
        ("invite", True),
        ("knock", None),
        ("leave", False),
        ("ban", False),
        (None, False),
    ],
)
def test_leave_self(version: str, current: str | None, ok: bool | None) -> None:
    """x.5.1: own leave iff invite/join (v7+: or knock)."""
    if ok is None:
        ok = int(version) >= 7
    room = Room(version).setup()
    if current:
        room.force_member(BOB, current)
    expected = "allow" if ok else "member.leave.self"
    assert outcome(room, member_pdu(room, BOB, BOB, "leave")) == expected


KICK_CASES = [
    # (sender membership, sender level, target membership, target level, kick, ban, expected)
    ("join", 50, "join", 0, 50, 50, "allow"),
    ("join", 50, "join", 50, 50, 50, "member.leave.kick"),
    ("join", 40, "join", 0, 50, 50, "member.leave.kick"),
    ("invite", 100, "join", 0, 50, 50, "member.leave.sender"),
    ("leave", 100, "join", 0, 50, 50, "member.leave.sender"),
    ("join", 50, "invite", 0, 50, 50, "allow"),
    ("join", 60, "ban", 0, 50, 70, "member.leave.unban"),
    ("join", 70, "ban", 0, 50, 70, "allow"),
    ("join", 70, "ban", 0, 80, 70, "member.leave.kick"),
    ("join", 70, "ban", 70, 50, 70, "member.leave.kick"),
]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("s_m", "s_l", "t_m", "t_l", "kick", "ban", "expected"), KICK_CASES)
def test_kick_and_unban(
    version: str, s_m: str, s_l: int, t_m: str, t_l: int, kick: int, ban: int, expected: str
) -> None:
    """x.5.2-x.5.5."""
    room = Room(version).setup(users={BOB: s_l, CAROL: t_l}, power={"kick": kick, "ban": ban})
    room.force_member(BOB, s_m)
    room.force_member(CAROL, t_m)
    assert outcome(room, member_pdu(room, BOB, CAROL, "leave")) == expected


# -- x.6 ban ---------------------------------------------------------------------------------

BAN_CASES = [
    ("join", 50, 0, 50, "allow"),
    ("join", 50, 50, 50, "member.ban.level"),
    ("join", 40, 0, 50, "member.ban.level"),
    ("invite", 100, 0, 50, "member.ban.sender"),
    ("join", 1, 0, None, "member.ban.level"),  # default ban level 50
]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("s_m", "s_l", "t_l", "ban", "expected"), BAN_CASES)
def test_ban(version: str, s_m: str, s_l: int, t_l: int, ban: int | None, expected: str) -> None:
    """x.6.1-x.6.3 (the target need not be in the room)."""
    power = {} if ban is None else {"ban": ban}
    room = Room(version).setup(users={BOB: s_l, CAROL: t_l}, power=power)
    room.force_member(BOB, s_m)
    assert outcome(room, member_pdu(room, BOB, CAROL, "ban")) == expected


def test_v12_cannot_ban_a_creator() -> None:
    """v12: creators have infinite power, nobody's level exceeds theirs."""
    room = Room("12", create_content={"additional_creators": [CAROL]}).setup(users={BOB: 100})
    room.member(BOB, "join")
    assert outcome(room, member_pdu(room, BOB, CAROL, "ban")) == "member.ban.level"
    assert outcome(room, member_pdu(room, BOB, ALICE, "ban")) == "member.ban.level"
    room.force_member(CAROL, "join")
    assert outcome(room, member_pdu(room, CAROL, BOB, "ban")) == "allow"


# -- x.7 knock -------------------------------------------------------------------------------

KNOCK_CASES = [
    # (join rule, current membership, expected, min version)
    ("knock", None, "allow", 7),
    ("knock", "leave", "allow", 7),
    ("knock", "knock", "allow", 7),
    ("knock", "ban", "member.knock.state", 7),
    ("knock", "invite", "member.knock.state", 7),
    ("knock", "join", "member.knock.state", 7),
    ("knock_restricted", None, "allow", 10),
    ("public", None, "member.knock.rule", 7),
    ("invite", None, "member.knock.rule", 7),
    ("restricted", None, "member.knock.rule", 8),
]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("rule", "current", "expected", "low"), KNOCK_CASES)
def test_knock(version: str, rule: str, current: str | None, expected: str, low: int) -> None:
    """x.7 (v7+): v8/v9 only knock, v10+ also knock_restricted; v1-v6: unknown."""
    room = Room(version).setup(join_rule=rule)
    if current:
        room.force_member(BOB, current)
    if int(version) < 7:
        expected = "member.unknown"
    elif int(version) < low:
        expected = "member.knock.rule"
    assert outcome(room, member_pdu(room, BOB, BOB, "knock")) == expected


@pytest.mark.parametrize("version", ["7", "12"])
def test_knock_for_someone_else(version: str) -> None:
    room = Room(version).setup(join_rule="knock")
    assert outcome(room, member_pdu(room, ALICE, BOB, "knock")) == "member.knock.not_self"


# -- m.federate for the target (Synapse) ---------------------------------------------------


@pytest.mark.parametrize("version", ["1", "12"])
def test_unfederated_room_rejects_remote_target(version: str) -> None:
    """Synapse also checks the *target's* server against m.federate (spec rule 3 only
    checks the sender's); followed for interoperability."""
    room = Room(version, create_content={"m.federate": False}).setup()
    assert outcome(room, member_pdu(room, ALICE, DAVE, "invite")) == "allow"
    assert outcome(room, member_pdu(room, ALICE, BOB, "invite")) == "federate"


@pytest.mark.parametrize("version", ALL)
def test_target_without_domain(version: str) -> None:
    room = Room(version).setup()
    assert outcome(room, member_pdu(room, ALICE, "@nodomain", "invite")) == "format"
