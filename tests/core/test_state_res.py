"""State resolution v2 / v2.1 scenarios built from the spec's rules.

Spec: content/rooms/fragments/v2-state-res.md and content/rooms/v12.md "State
resolution". Each scenario forks a small room, resolves the forks and checks the
result the algorithm's steps imply (worked out in the comments).
"""

from __future__ import annotations

import itertools

import pytest

from pocketserver.core.room_versions import UnsupportedRoomVersion
from pocketserver.core.state_res import resolve_state

from .test_state_res_builder import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    EVE,
    JR,
    MALLORY,
    PL,
    TOPIC,
    ZARA,
    Room,
    member,
)

V2_VERSIONS = ["2", "3", "6", "10", "11"]
ALL_V2 = [*V2_VERSIONS, "12"]


def resolve_all_orders(room: Room, *state_sets: dict[tuple[str, str], str]) -> dict:
    """Resolve in every order of the state sets and check they all agree."""
    results = [
        resolve_state(room.version, list(order), room.events)
        for order in itertools.permutations(state_sets)
    ]
    for result in results[1:]:
        assert result == results[0]
    return results[0]


@pytest.mark.parametrize("version", ALL_V2)
def test_demotion_beats_concurrent_ban_by_the_demoted(version: str) -> None:
    # Power-level revocation with a conflicting op. Alice (100) demotes Mallory (50);
    # concurrently Mallory bans Carol. Step 1 sorts Alice's power levels first (higher
    # sender power), so Mallory is at 0 when her ban is checked: it fails, and Carol's
    # join (left for the mainline step) is re-applied.
    room = Room(version)
    base = room.base(BOB, CAROL, MALLORY, pl_users={ALICE: 100, MALLORY: 50})
    demote, fork_a = room.send(base, "m.room.power_levels", ALICE, room.pl({ALICE: 100}), "")
    ban, fork_b = room.send(base, "m.room.member", MALLORY, {"membership": "ban"}, CAROL, ts=1)
    result = resolve_all_orders(room, fork_a, fork_b)
    assert result[PL] == demote
    assert result[member(CAROL)] == base[member(CAROL)]
    assert ban not in result.values()


@pytest.mark.parametrize("version", ALL_V2)
def test_ban_beats_concurrent_op_by_the_banned(version: str) -> None:
    # Ban vs op race: Alice bans Mallory while Mallory (50) gives Dave 50. The ban is
    # sorted first (sender power 100 > 50); then Mallory is no longer joined, so her
    # power levels event fails its auth check (rule: sender must be joined).
    room = Room(version)
    base = room.base(MALLORY, DAVE, pl_users={ALICE: 100, MALLORY: 50})
    ban, fork_a = room.send(base, "m.room.member", ALICE, {"membership": "ban"}, MALLORY)
    op_content = room.pl({ALICE: 100, MALLORY: 50, DAVE: 50})
    _op, fork_b = room.send(base, "m.room.power_levels", MALLORY, op_content, "", ts=1)
    result = resolve_all_orders(room, fork_a, fork_b)
    assert result[member(MALLORY)] == ban
    assert result[PL] == base[PL]


@pytest.mark.parametrize("version", ALL_V2)
@pytest.mark.parametrize(("ts_bob", "ts_carol", "winner"), [(1000, 2000, CAROL), (2000, 1000, BOB)])
def test_topic_fork_later_timestamp_wins(
    version: str, ts_bob: int, ts_carol: int, winner: str
) -> None:
    # Two topics based on the same power levels have the same mainline position, so
    # they are applied in origin_server_ts order; both pass, the last one stays.
    room = Room(version)
    base = room.base(BOB, CAROL)
    levels = room.pl({ALICE: 100}, events={"m.room.topic": 0})
    _, base = room.send(base, "m.room.power_levels", ALICE, levels, "")
    by_bob, fork_a = room.send(base, "m.room.topic", BOB, {"topic": "b"}, "", ts=ts_bob)
    by_carol, fork_b = room.send(base, "m.room.topic", CAROL, {"topic": "c"}, "", ts=ts_carol)
    result = resolve_all_orders(room, fork_a, fork_b)
    assert result[TOPIC] == (by_carol if winner == CAROL else by_bob)


@pytest.mark.parametrize("version", ALL_V2)
def test_topic_fork_against_raised_topic_level(version: str) -> None:
    # Alice raises the topic level to 50 while Bob (0) changes the topic, allowed by
    # the old levels. Alice's power levels win step 2; in the mainline step the old
    # topic and Bob's (both based on the old levels) are applied in timestamp order
    # and Bob's now fails, so the old topic stays.
    room = Room(version)
    base = room.base(BOB)
    _, base = room.send(
        base, "m.room.power_levels", ALICE, room.pl({ALICE: 100}, events={"m.room.topic": 0}), ""
    )
    old_topic, base = room.send(base, "m.room.topic", ALICE, {"topic": "old"}, "")
    raise_, fork_a = room.send(
        base, "m.room.power_levels", ALICE, room.pl({ALICE: 100}, events={"m.room.topic": 50}), ""
    )
    _, fork_b = room.send(base, "m.room.topic", BOB, {"topic": "bob"}, "")
    result = resolve_all_orders(room, fork_a, fork_b)
    assert result[PL] == raise_
    assert result[TOPIC] == old_topic


@pytest.mark.parametrize("version", ALL_V2)
def test_join_rule_change_defeats_concurrent_join(version: str) -> None:
    # Alice makes the room invite-only while Eve joins it as public. The join rules
    # (a power event) are applied first; Eve's join then fails: she is not in the state.
    room = Room(version)
    base = room.base(BOB)
    invite_only, fork_a = room.send(base, "m.room.join_rules", ALICE, {"join_rule": "invite"}, "")
    _, fork_b = room.send(base, "m.room.member", EVE, {"membership": "join"}, EVE)
    result = resolve_all_orders(room, fork_a, fork_b)
    assert result[JR] == invite_only
    assert member(EVE) not in result


@pytest.mark.parametrize("version", ALL_V2)
def test_unconflicted_state_is_kept_and_missing_key_is_conflicted(version: str) -> None:
    # A key present in only one state set is conflicted in v2 ("present in every
    # S_i with the same value"); Zara's join is valid, so it is resolved back in.
    room = Room(version)
    base = room.base(BOB)
    zara, fork_a = room.send(base, "m.room.member", ZARA, {"membership": "join"}, ZARA)
    topic, fork_b = room.send(base, "m.room.topic", ALICE, {"topic": "t"}, "")
    result = resolve_all_orders(room, fork_a, fork_b)
    assert result == {**base, member(ZARA): zara, TOPIC: topic}


@pytest.mark.parametrize("version", ALL_V2)
def test_identical_and_single_state_sets(version: str) -> None:
    room = Room(version)
    base = room.base(BOB)
    assert resolve_state(version, [base], room.events) == base
    assert resolve_state(version, [base, dict(base), base], room.events) == base
    assert resolve_state(version, [], room.events) == {}


def test_unknown_room_version_is_refused() -> None:
    with pytest.raises(UnsupportedRoomVersion):
        resolve_state("999", [{}], {})


# --- v2.1 (room v12) against v2: the two fixes of rooms/v12.md "State resolution" -----


def _join_rules_reset_room(version: str) -> tuple[Room, dict, dict, str]:
    """Alice makes Bob admin, sets public, Bob joins, Alice sets invite and leaves.
    A second fork wrongly cites the old (public) join rules."""
    room = Room(version)
    state = room.base(pl_users={ALICE: 100, BOB: 100})
    public = state[JR]
    _, state = room.send(state, "m.room.member", BOB, {"membership": "join"}, BOB)
    invite_only, state = room.send(state, "m.room.join_rules", ALICE, {"join_rule": "invite"}, "")
    _, state = room.send(state, "m.room.member", ALICE, {"membership": "leave"}, ALICE)
    wrong = {**state, JR: public}
    return room, state, wrong, invite_only


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_v2_resets_join_rules_when_their_senders_left(version: str) -> None:
    # v2 starts the iterative auth checks from the unconflicted state, where Alice
    # (the sender of both conflicted join rules) has left: both fail and the join
    # rules key vanishes from the result - the reset v12 fixes.
    room, right, wrong, _ = _join_rules_reset_room(version)
    result = resolve_all_orders(room, right, wrong)
    assert JR not in result
    assert result == {k: v for k, v in right.items() if k != JR}


def test_v21_keeps_join_rules_when_their_senders_left() -> None:
    # v2.1 starts from an empty state: each join rules event is checked against its
    # own auth events (Alice still joined), both pass in power order, the newer stays.
    room, right, wrong, invite_only = _join_rules_reset_room("12")
    result = resolve_all_orders(room, right, wrong)
    assert result == right
    assert result[JR] == invite_only


def _dodgy_citation_room(version: str) -> tuple[Room, dict, dict, dict[str, str]]:
    """Alice promotes Bob (PL2), Bob promotes Carol (PL3); Eve joins under PL3, then
    renames herself citing the *first* power levels (PL1); Zara joins under PL3.
    One fork holds Eve's rename with PL1, the other Zara's join with PL3."""
    room = Room(version)
    s = room.base(BOB, CAROL)
    pl1 = s[PL]
    pl2, s = room.send(s, "m.room.power_levels", ALICE, room.pl({ALICE: 100, BOB: 50}), "")
    levels3 = room.pl({ALICE: 100, BOB: 50, CAROL: 50})
    pl3, s = room.send(s, "m.room.power_levels", BOB, levels3, "")
    eve1, s = room.send(s, "m.room.member", EVE, {"membership": "join"}, EVE)
    create = [] if room.rv.hydra else [s[("m.room.create", "")]]
    eve2, after_rename = room.send(
        s,
        "m.room.member",
        EVE,
        {"membership": "join", "displayname": "Eve"},
        EVE,
        auth=[*create, pl1, s[JR], eve1],
    )
    zara, after_zara = room.send(s, "m.room.member", ZARA, {"membership": "join"}, ZARA)
    dodgy = {**after_rename, PL: pl1}
    sensible = {k: v for k, v in after_zara.items() if k != member(EVE)}
    ids = {"pl1": pl1, "pl2": pl2, "pl3": pl3, "eve1": eve1, "eve2": eve2, "zara": zara}
    return room, dodgy, sensible, ids


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_v2_resets_power_levels_on_dodgy_citation(version: str) -> None:
    # v2: the auth difference holds PL1, PL3 and the member events but not PL2. PL1
    # (Alice, 100) sorts before PL3 (Bob, 50); with PL1 in force Bob has 0, so PL3
    # fails: the power levels reset to PL1, and the mainline step applies Eve's
    # join, then her rename (all based on PL1, by timestamp).
    room, dodgy, sensible, ids = _dodgy_citation_room(version)
    result = resolve_all_orders(room, dodgy, sensible)
    assert result[PL] == ids["pl1"]
    assert result[member(EVE)] == ids["eve2"]
    assert result[member(ZARA)] == ids["zara"]


def test_v21_replays_the_conflicted_subgraph_on_dodgy_citation() -> None:
    # v2.1: the conflicted subgraph (paths PL3 -> PL2 -> PL1, Bob's join, the join
    # rules) joins the full conflicted set, so PL2 and PL3 are replayed in order and
    # PL3 stays. In the mainline of PL3, Eve's rename is based on PL1 (earliest) and
    # goes first, then her join (based on PL3): the join is the final member event.
    room, dodgy, sensible, ids = _dodgy_citation_room("12")
    result = resolve_all_orders(room, dodgy, sensible)
    assert result[PL] == ids["pl3"]
    assert result[member(EVE)] == ids["eve1"]
    assert result[member(ZARA)] == ids["zara"]
    expected = {**sensible, PL: ids["pl3"], member(EVE): ids["eve1"]}
    assert result == expected


@pytest.mark.parametrize("version", ["10", "12"])
def test_long_forks_resolve_without_recursion(version: str) -> None:
    # 1,500 power levels changes on one fork (a 1,500-deep mainline, all power
    # events) against 1,500 topics on the other: every event is in the auth
    # difference. Alice's last levels win; all of Bob's topics stay allowed (topic
    # level 0), and the latest one is applied last.
    room = Room(version)
    base = room.base(BOB)
    levels = room.pl({ALICE: 100, BOB: 0}, events={"m.room.topic": 0})
    _, base = room.send(base, "m.room.power_levels", ALICE, levels, "")
    fork_a, fork_b = dict(base), dict(base)
    for i in range(1500):
        levels = room.pl({ALICE: 100, BOB: 0, DAVE: i % 90}, events={"m.room.topic": 0})
        last_pl, fork_a = room.send(fork_a, "m.room.power_levels", ALICE, levels, "")
        last_topic, fork_b = room.send(fork_b, "m.room.topic", BOB, {"topic": str(i)}, "")
    result = resolve_all_orders(room, fork_a, fork_b)
    assert result[PL] == last_pl
    assert result[TOPIC] == last_topic
