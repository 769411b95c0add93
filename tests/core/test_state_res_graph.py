"""The graph definitions of state resolution v2/v2.1 on hand-made auth graphs.

Spec: content/rooms/fragments/v2-state-res.md "Definitions" (auth difference,
reverse topological power ordering, mainline ordering, power events) and
content/rooms/v12.md "Conflicted state subgraph".
"""

from __future__ import annotations

import pytest

from pocketserver.core.room_versions import get_room_version
from pocketserver.core.state_res_base import AuthGraph, separate
from pocketserver.core.state_res_graph import (
    CREATOR_POWER_LEVEL,
    auth_difference,
    conflicted_subgraph,
    is_power_event,
    mainline_sort,
    reverse_topological_power_sort,
    sender_power_level,
)

V10 = get_room_version("10")


def ev(
    etype: str = "m.room.topic",
    sender: str = "@a:x",
    auth: tuple[str, ...] = (),
    ts: int = 0,
    state_key: str | None = "",
    **content: object,
) -> dict[str, object]:
    event: dict[str, object] = {
        "type": etype,
        "sender": sender,
        "content": content,
        "origin_server_ts": ts,
        "auth_events": list(auth),
        "room_id": "!r:x",
    }
    if state_key is not None:
        event["state_key"] = state_key
    return event


def chain(*ids: str) -> dict[str, dict[str, object]]:
    """A linear auth chain: each event cites the previous one."""
    out = {}
    for i, event_id in enumerate(ids):
        out[event_id] = ev(auth=(ids[i - 1],) if i else ())
    return out


# --- separation (Definitions: "Unconflicted state map and conflicted state set") ----


def test_separate_v2_and_v1_disagree_on_missing_keys() -> None:
    a = {("t", ""): "$1", ("u", ""): "$2"}
    b = {("t", ""): "$1"}
    assert separate([a, b], missing_key_conflicts=True) == (
        {("t", ""): "$1"},
        {("u", ""): {"$2"}},
    )
    assert separate([a, b], missing_key_conflicts=False) == (
        {("t", ""): "$1", ("u", ""): "$2"},
        {},
    )


# --- auth difference ---------------------------------------------------------------


def test_auth_difference_of_forked_chains() -> None:
    # A <- B <- C and A <- B <- D: the chains of {C} and {D} share A, B.
    events = chain("$A", "$B", "$C")
    events["$D"] = ev(auth=("$B",))
    graph = AuthGraph(V10, events)
    assert auth_difference(graph, [{"$C"}, {"$D"}]) == {"$C", "$D"}
    assert auth_difference(graph, [{"$C"}, {"$C"}]) == set()


def test_auth_difference_counts_state_set_events_like_synapse() -> None:
    # Spec: C_1 = auth chain of {A} = {}, C_2 = auth chain of {B} = {A}: difference
    # {A}. Synapse counts the state events themselves: {A} vs {B, A}: difference {B}.
    # We follow Synapse (CORE_API.md).
    events = chain("$A", "$B")
    assert auth_difference(AuthGraph(V10, events), [{"$A"}, {"$B"}]) == {"$B"}


def test_auth_difference_with_three_sets() -> None:
    # Diamond: A <- B, A <- C, D cites B and C. Sets {D}, {B}, {C}.
    events = chain("$A", "$B")
    events["$C"] = ev(auth=("$A",))
    events["$D"] = ev(auth=("$B", "$C"))
    graph = AuthGraph(V10, events)
    assert auth_difference(graph, [{"$D"}, {"$B"}, {"$C"}]) == {"$B", "$C", "$D"}
    assert auth_difference(graph, [{"$D"}, {"$B", "$C"}]) == {"$D"}


def test_auth_difference_ignores_missing_auth_events() -> None:
    events = {"$B": ev(auth=("$missing",)), "$C": ev(auth=("$missing",))}
    assert auth_difference(AuthGraph(V10, events), [{"$B"}, {"$C"}]) == {"$B", "$C"}


def test_deep_chains_do_not_recurse() -> None:
    ids = [f"${i}" for i in range(60_000)]
    graph = AuthGraph(V10, chain(*ids))
    assert auth_difference(graph, [{ids[-1]}, {ids[-2]}]) == {ids[-1]}
    assert len(graph.ancestors([ids[-1]])) == 60_000
    assert conflicted_subgraph(graph, [ids[-1], ids[0]]) == set(ids)


# --- conflicted state subgraph (v12) -------------------------------------------------


def test_conflicted_subgraph_is_the_paths_between_conflicted_events() -> None:
    # A <- B <- C <- D <- E, plus F citing C (a side branch). Conflicted {B, D}:
    # the only path is D -> C -> B, so the subgraph is {B, C, D}; A is below both
    # (not between), E and F above.
    events = chain("$A", "$B", "$C", "$D", "$E")
    events["$F"] = ev(auth=("$C",))
    graph = AuthGraph(V10, events)
    assert conflicted_subgraph(graph, {"$B", "$D"}) == {"$B", "$C", "$D"}
    assert conflicted_subgraph(graph, {"$B", "$F"}) == {"$B", "$C", "$F"}
    assert conflicted_subgraph(graph, {"$E", "$F"}) == {"$E", "$F"}  # no path between


def test_v12_create_event_is_an_implied_auth_event() -> None:
    v12 = get_room_version("12")
    events = {
        "$create": ev("m.room.create", auth=(), state_key=""),
        "$a": {**ev(auth=()), "room_id": "!create"},
    }
    graph = AuthGraph(v12, events)
    assert graph.auth_ids("$a") == ("$create",)
    assert graph.auth_ids("$create") == ()


# --- power events -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ev("m.room.power_levels"), True),
        (ev("m.room.join_rules", join_rule="invite"), True),
        (ev("m.room.create"), True),  # Synapse counts it too
        (ev("m.room.member", "@a:x", state_key="@b:x", membership="ban"), True),
        (ev("m.room.member", "@a:x", state_key="@b:x", membership="leave"), True),
        (ev("m.room.member", "@b:x", state_key="@b:x", membership="leave"), False),
        (ev("m.room.member", "@a:x", state_key="@b:x", membership="invite"), False),
        (ev("m.room.member", "@b:x", state_key="@b:x", membership="join"), False),
        (ev("m.room.topic"), False),
        (ev("m.room.power_levels", state_key=None), False),  # not a state event
    ],
)
def test_power_events(event: dict[str, object], expected: bool) -> None:
    assert is_power_event(event) is expected


# --- sender power level ---------------------------------------------------------------


def test_sender_power_level_reads_the_events_own_power_levels() -> None:
    create = ev("m.room.create", "@a:x", ())
    pl = ev("m.room.power_levels", "@a:x", ("$c",), users={"@a:x": 100, "@b:x": "40"})
    pl_default = ev("m.room.power_levels", "@a:x", ("$c",), users_default=7)
    events = {
        "$c": create,
        "$pl": pl,
        "$pld": pl_default,
        "$by_a_no_pl": ev(sender="@a:x", auth=("$c",)),
        "$by_b_no_pl": ev(sender="@b:x", auth=("$c",)),
        "$by_b": ev(sender="@b:x", auth=("$c", "$pl")),
        "$by_z": ev(sender="@z:x", auth=("$c", "$pl")),
        "$by_z_default": ev(sender="@z:x", auth=("$c", "$pld")),
    }
    graph = AuthGraph(get_room_version("11"), events)  # v11: creator = create sender
    assert sender_power_level(graph, "$by_a_no_pl") == 100
    assert sender_power_level(graph, "$by_b_no_pl") == 0
    assert sender_power_level(graph, "$by_b") == 40  # string levels of old rooms
    assert sender_power_level(graph, "$by_z") == 0
    assert sender_power_level(graph, "$by_z_default") == 7


def test_v12_creators_have_infinite_power() -> None:
    create = ev("m.room.create", "@a:x", (), additional_creators=["@b:x"])
    create.pop("room_id")
    pl = {**ev("m.room.power_levels", "@a:x", (), users={"@c:x": 100}), "room_id": "!c"}
    events = {"$c": create, "$pl": pl}
    for user in ("@a:x", "@b:x", "@c:x", "@d:x"):
        events[user] = {**ev(sender=user, auth=("$pl",)), "room_id": "!c"}
    graph = AuthGraph(get_room_version("12"), events)
    levels = [sender_power_level(graph, u) for u in ("@a:x", "@b:x", "@c:x", "@d:x")]
    assert levels == [CREATOR_POWER_LEVEL, CREATOR_POWER_LEVEL, 100, 0]


# --- reverse topological power ordering ------------------------------------------------


def _power_room() -> dict[str, dict[str, object]]:
    create = ev("m.room.create", "@a:x", ())
    pl = ev("m.room.power_levels", "@a:x", ("$c",), users={"@a:x": 100, "@b:x": 50, "@d:x": 50})
    return {"$c": create, "$pl": pl}


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # Rule 1: higher sender power first.
        ({"$x": ("@b:x", 1, ()), "$y": ("@a:x", 2, ())}, ["$y", "$x"]),
        # Rule 2: same power, smaller origin_server_ts first.
        ({"$x": ("@b:x", 2, ()), "$y": ("@d:x", 1, ())}, ["$y", "$x"]),
        # Rule 3: same power and timestamp, smaller event ID first.
        ({"$y": ("@b:x", 1, ()), "$x": ("@d:x", 1, ())}, ["$x", "$y"]),
        # The auth DAG comes first: $low (power 0) is an auth event of $high.
        ({"$high": ("@a:x", 1, ("$low",)), "$low": ("@z:x", 9, ())}, ["$low", "$high"]),
        # Kahn's algorithm re-picks the smallest ready event after each step.
        (
            {
                "$1": ("@b:x", 1, ()),
                "$2": ("@a:x", 5, ("$1",)),
                "$3": ("@d:x", 0, ()),
                "$4": ("@z:x", 0, ()),
            },
            ["$3", "$1", "$2", "$4"],
        ),
    ],
)
def test_reverse_topological_power_ordering(
    events: dict[str, tuple[str, int, tuple[str, ...]]], expected: list[str]
) -> None:
    room = _power_room()
    for event_id, (sender, ts, auth) in events.items():
        room[event_id] = ev("m.room.join_rules", sender, ("$c", "$pl", *auth), ts)
    graph = AuthGraph(V10, room)
    full = frozenset(events)
    assert reverse_topological_power_sort(graph, events, full) == expected


def test_power_ordering_walks_only_through_the_full_conflicted_set() -> None:
    # $p cites $mid (not conflicted) which cites $q: like Synapse, no edge $q -> $p,
    # so the ordering falls back to the comparison (ts of $p is smaller).
    room = _power_room()
    room["$q"] = ev("m.room.join_rules", "@a:x", ("$c", "$pl"), 5)
    room["$mid"] = ev("m.room.topic", "@a:x", ("$c", "$pl", "$q"), 6)
    room["$p"] = ev("m.room.join_rules", "@a:x", ("$c", "$pl", "$mid"), 1)
    graph = AuthGraph(V10, room)
    assert reverse_topological_power_sort(graph, ["$p", "$q"], frozenset({"$p", "$q"})) == [
        "$p",
        "$q",
    ]
    with_mid = frozenset({"$p", "$q", "$mid"})
    assert reverse_topological_power_sort(graph, ["$p", "$q"], with_mid) == ["$q", "$mid", "$p"]


# --- mainline ordering -------------------------------------------------------------------


def test_mainline_ordering() -> None:
    # Mainline of P2: [P2, P1, P0]. An event's position is that of the first
    # mainline event in its power-levels chain; no such event (here: a power
    # levels chain off the mainline, or none at all) sorts first.
    room = {
        "$c": ev("m.room.create", auth=()),
        "$P0": ev("m.room.power_levels", auth=("$c",)),
        "$P1": ev("m.room.power_levels", auth=("$c", "$P0")),
        "$P2": ev("m.room.power_levels", auth=("$c", "$P1")),
        "$Q": ev("m.room.power_levels", auth=("$c", "$P1")),  # fork off P1
        "$R": ev("m.room.power_levels", auth=("$c",)),  # not on the mainline
        "$on_p2": ev(auth=("$c", "$P2"), ts=1),
        "$on_p1": ev(auth=("$c", "$P1"), ts=1),
        "$on_q": ev(auth=("$c", "$Q"), ts=0),  # Q -> P1: position of P1
        "$on_p0_late": ev(auth=("$c", "$P0"), ts=9),
        "$on_p0_early": ev(auth=("$c", "$P0"), ts=3),
        "$on_r": ev(auth=("$c", "$R"), ts=100),
        "$none": ev(auth=("$c",), ts=50),
    }
    graph = AuthGraph(V10, room)
    events = [e for e in room if e.startswith("$on") or e == "$none"]
    assert mainline_sort(graph, events, "$P2") == [
        "$none",
        "$on_r",
        "$on_p0_early",
        "$on_p0_late",
        "$on_q",
        "$on_p1",
        "$on_p2",
    ]
    # Without resolved power levels every position is "infinite": ts then ID order.
    assert mainline_sort(graph, ["$on_p2", "$on_q", "$none"], None) == [
        "$on_q",
        "$on_p2",
        "$none",
    ]
