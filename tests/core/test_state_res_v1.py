"""State resolution v1 (room v1) scenarios from the spec text.

Spec: content/rooms/v1.md "State resolution": power levels, then join rules, then
memberships are resolved by sorting on ascending depth (then descending
sha1(event_id)) and accepting events while they pass auth in *R*; other conflicts
pick the highest depth / lowest sha1 event that passes auth.
"""

from __future__ import annotations

import hashlib
import itertools

from pocketserver.core.state_res import resolve_state

from .test_state_res_builder import ALICE, BOB, CAROL, EVE, JR, PL, TOPIC, Room, member


def resolve(room: Room, *state_sets: dict) -> dict:
    results = [
        resolve_state("1", list(order), room.events) for order in itertools.permutations(state_sets)
    ]
    assert all(r == results[0] for r in results)
    return results[0]


def _room() -> tuple[Room, dict]:
    room = Room("1")
    base = room.base(BOB, CAROL, pl_users={ALICE: 100, BOB: 50})
    levels = room.pl({ALICE: 100, BOB: 50}, events={"m.room.topic": 0})
    _, base = room.send(base, "m.room.power_levels", ALICE, levels, "")
    return room, base


def test_power_levels_accepted_in_depth_order_until_one_fails() -> None:
    # Ascending depth: Alice's demotion of Bob (depth 20) goes into R first; Bob's own
    # change (depth 30) is then not allowed in R (Bob has 0), so the pass stops.
    room, base = _room()
    demote = room.pl({ALICE: 100}, events={"m.room.topic": 0})
    by_alice, fork_a = room.send(base, "m.room.power_levels", ALICE, demote, "", depth=20)
    bob_change = room.pl({ALICE: 100, BOB: 50, CAROL: 50}, events={"m.room.topic": 0})
    _, fork_b = room.send(base, "m.room.power_levels", BOB, bob_change, "", depth=30)
    assert resolve(room, fork_a, fork_b)[PL] == by_alice


def test_power_levels_later_allowed_event_wins() -> None:
    # Bob's change is the shallower one now: it goes into R first, then Alice's
    # (allowed) replaces it.
    room, base = _room()
    bob_change = room.pl({ALICE: 100, BOB: 50, CAROL: 50}, events={"m.room.topic": 0})
    _, fork_b = room.send(base, "m.room.power_levels", BOB, bob_change, "", depth=20)
    demote = room.pl({ALICE: 100}, events={"m.room.topic": 0})
    by_alice, fork_a = room.send(base, "m.room.power_levels", ALICE, demote, "", depth=30)
    assert resolve(room, fork_a, fork_b)[PL] == by_alice


def test_other_conflicts_pick_highest_depth_that_passes_auth() -> None:
    room, base = _room()
    _low, fork_a = room.send(base, "m.room.topic", BOB, {"topic": "low"}, "", depth=10)
    high, fork_b = room.send(base, "m.room.topic", CAROL, {"topic": "high"}, "", depth=12)
    assert resolve(room, fork_a, fork_b)[TOPIC] == high
    # Eve is not in the room: her (deeper) topic fails auth in R, the next one wins.
    eve_topic, fork_c = room.send(
        base, "m.room.topic", EVE, {"topic": "eve"}, "", depth=14, check=False
    )
    result = resolve(room, fork_a, fork_b, fork_c)
    assert result[TOPIC] == high
    assert eve_topic not in result.values()


def test_equal_depth_is_broken_by_lowest_sha1_of_event_id() -> None:
    room, base = _room()
    one, fork_a = room.send(base, "m.room.topic", BOB, {"topic": "1"}, "", depth=10)
    two, fork_b = room.send(base, "m.room.topic", CAROL, {"topic": "2"}, "", depth=10)
    expected = min((one, two), key=lambda e: hashlib.sha1(e.encode()).hexdigest())
    assert resolve(room, fork_a, fork_b)[TOPIC] == expected


def test_when_no_event_passes_the_last_in_order_is_kept() -> None:
    # Not in the spec text; Synapse keeps the lowest depth (highest sha1) event.
    room, base = _room()
    deep, fork_a = room.send(base, "m.room.name", EVE, {"name": "a"}, "", depth=20, check=False)
    shallow, fork_b = room.send(base, "m.room.name", EVE, {"name": "b"}, "", depth=10, check=False)
    result = resolve(room, fork_a, fork_b)
    assert result[("m.room.name", "")] == shallow
    assert deep not in result.values()


def test_key_in_one_state_set_only_is_not_a_conflict() -> None:
    # The join rules conflict resolves to invite-only (deeper, by Alice, allowed
    # after public). Eve's join exists in one fork only: v1 calls a conflict only
    # "different event_ids for the same key", so it is unconflicted and kept even
    # though the room is now invite-only (v2 would drop it: see test_state_res.py).
    room, base = _room()
    invite, fork_a = room.send(
        base, "m.room.join_rules", ALICE, {"join_rule": "invite"}, "", depth=40
    )
    eve_join, fork_b = room.send(base, "m.room.member", EVE, {"membership": "join"}, EVE, depth=30)
    result = resolve(room, fork_a, fork_b)
    assert result[JR] == invite
    assert result[member(EVE)] == eve_join


def test_membership_pass_sees_resolved_join_rules() -> None:
    # Fork A: Alice makes the room invite-only, then Eve leaves. Fork B: Eve leaves
    # and re-joins while the room is still public. The membership pass runs after
    # the join rules pass: by ascending depth the leave (20) goes into R, then the
    # re-join (30) must pass in R, where the join rule is already invite: it
    # fails, the leave stays.
    room, base = _room()
    eve_in, base = room.send(base, "m.room.member", EVE, {"membership": "join"}, EVE, depth=10)
    _, fork_a = room.send(base, "m.room.join_rules", ALICE, {"join_rule": "invite"}, "", depth=15)
    leave, fork_a = room.send(fork_a, "m.room.member", EVE, {"membership": "leave"}, EVE, depth=20)
    # Fork B: Eve left and re-joined while the room was still public.
    _, fork_b = room.send(base, "m.room.member", EVE, {"membership": "leave"}, EVE, depth=12)
    rejoin, fork_b = room.send(fork_b, "m.room.member", EVE, {"membership": "join"}, EVE, depth=30)
    result = resolve(room, fork_a, fork_b)
    assert result[member(EVE)] == leave
    assert rejoin not in result.values()
    assert eve_in != leave


def test_banned_membership_conflict() -> None:
    # Alice bans Bob (depth 30) while Bob leaves (depth 20): ascending depth puts
    # the leave first, then the ban is allowed in R (Alice 100 > Bob 50): ban wins.
    room, base = _room()
    ban, fork_a = room.send(base, "m.room.member", ALICE, {"membership": "ban"}, BOB, depth=30)
    _leave, fork_b = room.send(base, "m.room.member", BOB, {"membership": "leave"}, BOB, depth=20)
    assert resolve(room, fork_a, fork_b)[member(BOB)] == ban
