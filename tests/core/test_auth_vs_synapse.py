"""Differential test: our auth rules against Synapse's on generated rooms.

Synapse (``pip install matrix-synapse``) is imported, never copied: its
``check_state_independent_auth_rules`` + ``check_state_dependent_auth_rules`` decide
allow/deny for the same PDUs and auth events. Any Synapse exception counts as
"not accepted" (Synapse raises ``ValueError``/``TypeError`` on some garbage power
levels where we raise ``AuthError``).

Known, deliberate differences are excluded from generation (see the report /
module docstrings): none of the generated scenarios hit them.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from typing import Any

import pytest
from nacl.signing import SigningKey

from pocketserver.core.auth_rules import AuthError, check_auth, check_auth_against_state
from pocketserver.core.crypto import encode_base64, encode_canonical_json

from .authfixtures import ALICE, BOB, CAROL, DAVE, Room

pytest.importorskip("synapse")

with warnings.catch_warnings():  # Twisted/Synapse import-time deprecation warnings
    warnings.simplefilter("ignore")
    from synapse import event_auth
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.events import make_event_from_dict

VERSIONS = [str(n) for n in range(1, 13)]
USERS = [ALICE, BOB, CAROL, DAVE]
MEMBERSHIPS = [None, "join", "invite", "leave", "ban", "knock"]
JOIN_RULES = [None, "public", "invite", "knock", "restricted", "knock_restricted", "private"]
LEVELS: list[Any] = [None, 0, 10, 50, 60, 100]


class _Store:
    def __init__(self, events: dict[str, Any]) -> None:
        self.events = events

    async def get_events(
        self,
        event_ids: Any,
        redact_behaviour: Any,
        get_prev_content: bool = False,
        allow_rejected: bool = False,
    ) -> dict[str, Any]:
        return {i: self.events[i] for i in event_ids if i in self.events}


def synapse_allows(room: Room, pdu: dict[str, Any]) -> bool:
    """Run Synapse's auth checks on ``pdu`` with the events it cites."""
    rv = KNOWN_ROOM_VERSIONS[room.version]
    event = make_event_from_dict(room.pdu_for_synapse(pdu), rv)
    auth = [make_event_from_dict(room.pdu_for_synapse(a), rv) for a in room.auth_map(pdu).values()]
    store = _Store({a.event_id: a for a in auth})
    try:
        coro = event_auth.check_state_independent_auth_rules(store, event)
        with contextlib.suppress(StopIteration):
            coro.send(None)
        event_auth.check_state_dependent_auth_rules(event, auth)
    except Exception:
        return False
    return True


def ours_allows(room: Room, pdu: dict[str, Any]) -> bool:
    try:
        check_auth(room.version, pdu, room.auth_map(pdu))
    except AuthError:
        return False
    return True


def _pick_level(rng: random.Random, room: Room | None = None) -> Any:
    """A level; before v10 sometimes written as a string or a float."""
    value = rng.choice(LEVELS)
    if value is not None and room is not None and not room.rv.integer_only_power_levels:
        form = rng.random()
        if form < 0.15:
            return f" {value} "
        if form < 0.25:
            return value + 0.5
    return value


def _power_content(rng: random.Random, room: Room) -> dict[str, Any]:
    content: dict[str, Any] = {"users": {}}
    for user in USERS:
        level = _pick_level(rng, room)
        if level is not None and not (room.rv.hydra and user == room.creator):
            content["users"][user] = level
    if not room.rv.hydra and rng.random() < 0.8:
        content["users"][room.creator] = 100
    for name in ("ban", "kick", "invite", "redact", "state_default", "events_default"):
        level = _pick_level(rng, room)
        if level is not None:
            content[name] = level
    if rng.random() < 0.5:
        content["events"] = {
            t: rng.choice([0, 50, 100]) for t in ("m.room.name", "m.room.power_levels")
        }
    if rng.random() < 0.3:
        content["notifications"] = {"room": rng.choice([0, 50, 100])}
    if rng.random() < 0.2 and not room.rv.integer_only_power_levels:
        content["ban"] = str(rng.choice([0, 50, 100]))
    return content


def _make_room(rng: random.Random, version: str) -> Room:
    create_content: dict[str, Any] = {}
    if rng.random() < 0.15:
        create_content["m.federate"] = False
    if KNOWN_ROOM_VERSIONS[version].msc4289_creator_power_enabled and rng.random() < 0.3:
        create_content["additional_creators"] = [CAROL]
    room = Room(version, create_content=create_content)
    if rng.random() < 0.9:
        pl = room.build("m.room.power_levels", ALICE, _power_content(rng, room), state_key="")
        room.add(pl)
    rule = rng.choice(JOIN_RULES)
    if rule is not None:
        room.add(room.build("m.room.join_rules", ALICE, {"join_rule": rule}, state_key=""))
    for user in (BOB, CAROL, DAVE):
        membership = rng.choice(MEMBERSHIPS)
        if membership is not None:
            room.force_member(user, membership)
    return room


def _member_candidate(rng: random.Random, room: Room, sender: str) -> dict[str, Any]:
    target = rng.choice([*USERS, sender, sender])
    content: dict[str, Any] = {"membership": rng.choice(MEMBERSHIPS[1:])}
    if content["membership"] == "join" and rng.random() < 0.4:
        content["join_authorised_via_users_server"] = rng.choice(USERS)
    return room.build("m.room.member", sender, content, state_key=target)


def _power_candidate(rng: random.Random, room: Room, sender: str) -> dict[str, Any]:
    old = (
        room.state_event("m.room.power_levels")["content"]
        if room.state.get(("m.room.power_levels", ""))
        else {"users": {}}
    )
    content = {k: (dict(v) if isinstance(v, dict) else v) for k, v in old.items()}
    for _ in range(rng.randint(1, 3)):
        what = rng.choice(["user", "named", "event", "notif", "drop"])
        if what == "user":
            user = rng.choice(USERS)
            content.setdefault("users", {})[user] = _pick_level(rng, room) or 0
        elif what == "named":
            content[rng.choice(["ban", "kick", "invite", "redact", "state_default"])] = rng.choice(
                [0, 50, 100, 101]
            )
        elif what == "event":
            content.setdefault("events", {})[rng.choice(["m.room.name", "m.x"])] = rng.choice(
                [0, 50, 100]
            )
        elif what == "notif":
            content["notifications"] = {"room": rng.choice([0, 50, 100])}
        elif content.get("users"):
            content["users"].pop(rng.choice(sorted(content["users"])))
    return room.build("m.room.power_levels", sender, content, state_key="")


def _sender(rng: random.Random, room: Room) -> str:
    joined = [
        u
        for u in USERS
        if room.state.get(("m.room.member", u))
        and room.state_event("m.room.member", u)["content"]["membership"] == "join"
    ]
    if joined and rng.random() < 0.6:
        return rng.choice(joined)
    return rng.choice(USERS)


def _candidate(rng: random.Random, room: Room) -> dict[str, Any]:
    sender = _sender(rng, room)
    kind = rng.random()
    if kind < 0.45:
        return _member_candidate(rng, room, sender)
    if kind < 0.6:
        return _power_candidate(rng, room, sender)
    if kind < 0.7:
        return room.build("m.room.message", sender, {"body": "x"})
    if kind < 0.8:
        return room.build("m.room.name", sender, {"name": "n"}, state_key="")
    if kind < 0.85:
        key = rng.choice(["", sender, BOB, "a.example", "b.example"])
        return room.build("m.room.aliases", sender, {"aliases": []}, state_key=key)
    if kind < 0.9:
        return room.build("m.room.third_party_invite", sender, {}, state_key="tok")
    if kind < 0.95:
        return room.build("m.custom", sender, {}, state_key=rng.choice([sender, BOB, "@x"]))
    redacts = rng.choice(list(room.events))
    extra = {} if room.rv.redacts_in_content else {"redacts": redacts}
    content = {"redacts": redacts} if room.rv.redacts_in_content else {}
    return room.build("m.room.redaction", sender, content, extra=extra)


def _mutate_auth_events(rng: random.Random, room: Room, pdu: dict[str, Any]) -> dict[str, Any]:
    """Cite a wrong set of auth events: drop one, add an unexpected or a duplicate one."""
    listed = room.listed(pdu)
    older_power = [i for i, e in room.events.items() if e["type"] == "m.room.power_levels"]
    choice = rng.choice(["drop", "extra", "duplicate", "create"])
    if choice == "drop" and listed:
        listed.pop(rng.randrange(len(listed)))
    elif choice == "extra":
        name = room.build("m.room.topic", ALICE, {"topic": "t"}, state_key="")
        room.add(name)
        listed.append(name["event_id"])
    elif choice == "duplicate" and older_power:
        extra = room.build("m.room.power_levels", ALICE, {"users": {}}, state_key="")
        room.events[extra["event_id"]] = extra  # an alternative, never current, power levels
        listed.append(extra["event_id"])
    elif choice == "create":
        listed.append(room.create["event_id"])
    content = pdu["content"]
    return room.build(
        pdu["type"],
        pdu["sender"],
        content,
        state_key=pdu.get("state_key"),
        auth=listed,
        extra={"redacts": pdu["redacts"]} if "redacts" in pdu else None,
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_same_decisions_as_synapse(version: str) -> None:
    rng = random.Random(f"auth-vs-synapse-{version}")
    mismatches = []
    allowed = 0
    for _ in range(400):
        room = _make_room(rng, version)
        pdu = _candidate(rng, room)
        if rng.random() < 0.15:
            pdu = _mutate_auth_events(rng, room, pdu)
        ours, theirs = ours_allows(room, pdu), synapse_allows(room, pdu)
        allowed += ours
        if ours != theirs:
            mismatches.append((pdu, {k: v["content"] for k, v in room.auth_map(pdu).items()}))
    assert not mismatches, mismatches[:3]
    assert 40 < allowed < 360  # the generator exercises both outcomes


def _first_join(rng: random.Random, version: str) -> tuple[Room, dict[str, Any]]:
    """Rule x.3.1: the creator's join right after the create event (or near misses)."""
    room = Room(version, creator_join=False)
    sender = rng.choice([ALICE, ALICE, BOB])
    target = rng.choice([ALICE, ALICE, BOB])
    prev: list[str] | None = None
    if rng.random() < 0.3:
        other = room.add(room.build("m.room.topic", ALICE, {"topic": "t"}, state_key=""))
        prev = rng.choice([[other["event_id"]], [room.create["event_id"], other["event_id"]]])
    pdu = room.build("m.room.member", sender, {"membership": "join"}, state_key=target, prev=prev)
    return room, pdu


def _restricted_join(rng: random.Random, version: str) -> tuple[Room, dict[str, Any]]:
    """Rule x.3.5: restricted / knock_restricted joins via an authorising user."""
    room = Room(version)
    users = {BOB: rng.choice([0, 50, 100]), CAROL: rng.choice([0, 50])}
    power = {"invite": rng.choice([0, 50])}
    rule = rng.choice(["restricted", "knock_restricted", "invite"])
    room.setup(join_rule=rule, users=users, power=power)
    for user in (BOB, CAROL):
        membership = rng.choice(["join", "join", "invite", None])
        if membership is not None:
            room.force_member(user, membership)
    content: dict[str, Any] = {"membership": "join"}
    if rng.random() < 0.9:
        content["join_authorised_via_users_server"] = rng.choice([ALICE, BOB, CAROL, DAVE])
    return room, room.build("m.room.member", DAVE, content, state_key=DAVE)


@pytest.mark.parametrize("version", VERSIONS)
def test_first_join_and_restricted_same_as_synapse(version: str) -> None:
    rng = random.Random(f"auth-vs-synapse-joins-{version}")
    outcomes = set()
    for _ in range(60):
        room, pdu = rng.choice([_first_join, _restricted_join])(rng, version)
        ours, theirs = ours_allows(room, pdu), synapse_allows(room, pdu)
        outcomes.add(ours)
        assert ours == theirs, (pdu, {k: v["content"] for k, v in room.auth_map(pdu).items()})
    assert outcomes == {True, False}


def _third_party_invite(rng: random.Random, version: str) -> tuple[Room, dict[str, Any]]:
    """Rule x.4.1: invites carrying ``third_party_invite`` (good and bad signatures)."""
    key = SigningKey(bytes(range(32)))
    other = SigningKey(bytes(range(1, 33)))
    room = Room(version)
    room.setup(join_rule="invite")
    public = encode_base64(bytes(key.verify_key))
    content: dict[str, Any] = rng.choice(
        [{"public_key": public}, {"public_keys": [{"public_key": public}]}, {}]
    )
    inviter = rng.choice([ALICE, ALICE, BOB])
    room.add(room.build("m.room.third_party_invite", inviter, content, state_key="tok"))
    if rng.random() < 0.2:
        room.force_member(CAROL, "ban")
    signed: dict[str, Any] = {
        "mxid": rng.choice([CAROL, CAROL, DAVE]),
        "token": rng.choice(["tok", "tok", "nope"]),
    }
    signer = rng.choice([key, key, other])
    sig = signer.sign(encode_canonical_json(signed)).signature
    signed["signatures"] = {"id.example": {"ed25519:0": encode_base64(sig)}}
    member = {"membership": "invite", "third_party_invite": {"display_name": "c", "signed": signed}}
    sender = rng.choice([ALICE, ALICE, BOB])
    return room, room.build("m.room.member", sender, member, state_key=CAROL)


@pytest.mark.parametrize("version", VERSIONS)
def test_third_party_invites_same_as_synapse(version: str) -> None:
    rng = random.Random(f"auth-vs-synapse-3pid-{version}")
    outcomes = set()
    for _ in range(100):
        room, pdu = _third_party_invite(rng, version)
        ours, theirs = ours_allows(room, pdu), synapse_allows(room, pdu)
        outcomes.add(ours)
        assert ours == theirs, (pdu, {k: v["content"] for k, v in room.auth_map(pdu).items()})
    assert outcomes == {True, False}


def synapse_state_dependent_allows(room: Room, pdu: dict[str, Any]) -> bool:
    rv = KNOWN_ROOM_VERSIONS[room.version]
    event = make_event_from_dict(room.pdu_for_synapse(pdu), rv)
    state = [
        make_event_from_dict(room.pdu_for_synapse(room.events[i]), rv) for i in room.state.values()
    ]
    try:
        event_auth.check_state_dependent_auth_rules(event, state)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("version", VERSIONS)
def test_against_state_same_as_synapse_state_dependent(version: str) -> None:
    """``check_auth_against_state`` with the whole current state (extra entries
    included) decides like Synapse's ``check_state_dependent_auth_rules``."""
    rng = random.Random(f"auth-vs-synapse-state-{version}")
    outcomes = set()
    for _ in range(150):
        room = _make_room(rng, version)
        room.add(room.build("m.room.topic", ALICE, {"topic": "t"}, state_key=""))
        pdu = _candidate(rng, room)
        state = {k: room.events[i] for k, i in room.state.items()}
        try:
            check_auth_against_state(version, pdu, state)
            ours = True
        except AuthError:
            ours = False
        outcomes.add(ours)
        assert ours == synapse_state_dependent_allows(room, pdu), pdu
    assert outcomes == {True, False}
