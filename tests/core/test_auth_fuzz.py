"""Robustness: ``check_auth`` rejects only with ``AuthError``, whatever the input.

Hypothesis feeds (1) arbitrary JSON-ish events and auth event mappings, and (2)
valid events and auth events from a real room with one value anywhere replaced by
arbitrary JSON. Any exception other than ``AuthError`` is a bug.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocketserver.core.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_against_state,
)

from .authfixtures import ALICE, BOB, CAROL, Room

VERSIONS = [str(n) for n in range(1, 13)]
KEYS = [
    "type", "sender", "state_key", "content", "room_id", "event_id", "auth_events",
    "prev_events", "redacts", "membership", "join_rule", "users", "users_default",
    "events", "events_default", "state_default", "ban", "kick", "invite", "redact",
    "notifications", "creator", "room_version", "m.federate", "additional_creators",
    "third_party_invite", "signed", "mxid", "token", "signatures", "public_key",
    "public_keys", "join_authorised_via_users_server", "allow",
]  # fmt: skip
STRINGS = st.one_of(
    st.sampled_from([ALICE, BOB, CAROL, "", "@", "join", "invite", "leave", "ban", "knock",
                     "public", "restricted", "m.room.member", "m.room.create",
                     "m.room.power_levels", "m.room.join_rules", "50", " 1 ", "1e3", "!r:a"]),
    st.text(max_size=8),
)  # fmt: skip
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), STRINGS)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=4)), inner, max_size=5),
    ),
    max_leaves=20,
)
EVENT_TYPES = st.sampled_from(
    ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules",
     "m.room.third_party_invite", "m.room.aliases", "m.room.redaction", "m.room.message"]
)  # fmt: skip


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event = draw(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=8))
    if draw(st.booleans()):
        event["type"] = draw(EVENT_TYPES)
        event["sender"] = draw(st.sampled_from([ALICE, BOB, "@x"]))
        event["content"] = draw(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6))
    return event


KEYS_2 = st.tuples(EVENT_TYPES, st.sampled_from(["", ALICE, BOB, "tok"]))


@st.composite
def mappings(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    out: dict[Any, Any] = {}
    for key in draw(st.lists(KEYS_2, max_size=5)):
        event = draw(events())
        if draw(st.booleans()):
            event["type"], event["state_key"] = key
        out[key] = event
    return out


def only_auth_errors(fn: Any, *args: Any) -> None:
    with contextlib.suppress(AuthError):
        fn(*args)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([*VERSIONS, "99", None]), events(), mappings())
def test_arbitrary_input_only_auth_error(version: Any, event: Any, auth: Any) -> None:
    only_auth_errors(check_auth, version, event, auth)
    only_auth_errors(check_auth_against_state, version, event, auth)
    only_auth_errors(auth_types_for_event, version, event)


def _room(version: str) -> tuple[Room, list[dict[str, Any]]]:
    """A room with one event of each kind the rules treat specially."""
    room = Room(version).setup(users={BOB: 50})
    room.member(BOB, "join")
    kinds = [
        room.build("m.room.member", CAROL, {"membership": "join"}, state_key=CAROL),
        room.build("m.room.member", BOB, {"membership": "ban"}, state_key=CAROL),
        room.build("m.room.member", ALICE, {"membership": "leave"}, state_key=BOB),
        room.build(
            "m.room.member",
            ALICE,
            {"membership": "invite", "third_party_invite": {"signed": {"mxid": CAROL,
             "token": "tok", "signatures": {"x": {"ed25519:0": "abc"}}}}},
            state_key=CAROL,
        ),
        room.build("m.room.power_levels", ALICE, {"users": {BOB: "60"}, "ban": 1}, state_key=""),
        room.build("m.room.redaction", BOB, {"redacts": "$x"}, extra={"redacts": "$x:b"}),
        room.build("m.room.aliases", BOB, {}, state_key="b.example"),
        room.build("m.room.message", BOB, {"body": "x"}),
        room.create,
    ]  # fmt: skip
    return room, kinds


ROOMS = {v: _room(v) for v in VERSIONS}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    value[path[0]] = _replace(value[path[0]], path[1:], new)
    return value


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(VERSIONS), st.data(), JSON)
def test_mutated_valid_events_only_auth_error(version: str, data: st.DataObject, new: Any) -> None:
    room, kinds = ROOMS[version]
    event = copy.deepcopy(data.draw(st.sampled_from(kinds)))
    auth = copy.deepcopy(room.auth_map(event))
    target: Any = data.draw(st.sampled_from([None, *sorted(auth)]))
    if target is None:  # mutate the event itself
        path = data.draw(st.sampled_from(_paths(event)[1:]))
        event = _replace(event, path, new)
    else:
        path = data.draw(st.sampled_from(_paths(auth[target])[1:]))
        auth[target] = _replace(auth[target], path, new)
    only_auth_errors(check_auth, version, event, auth)
    only_auth_errors(check_auth_against_state, version, event, auth)
    only_auth_errors(auth_types_for_event, version, event)


def test_mutation_base_cases_are_allowed_or_rejected_cleanly() -> None:
    """The unmutated events of the fuzz rooms pass through without surprises."""
    allowed = 0
    for version, (room, kinds) in ROOMS.items():
        for event in kinds:
            try:
                check_auth(version, event, room.auth_map(event))
                allowed += 1
            except AuthError:
                pass
    assert allowed >= 5 * len(ROOMS)


def test_lone_surrogates_only_auth_error() -> None:
    """Strings that cannot be UTF-8 encoded (JSON allows ``\\ud800``) never crash."""
    bad = "\ud800"
    for version, (room, kinds) in ROOMS.items():
        for event in kinds:
            for mutate in ("content", "sender", "state_key", "auth"):
                pdu = copy.deepcopy(event)
                auth = copy.deepcopy(room.auth_map(event))
                if mutate == "content":
                    pdu["content"] = {**pdu["content"], "x": bad}
                    tpi = pdu["content"].get("third_party_invite")
                    if isinstance(tpi, dict):
                        tpi["signed"]["x"] = bad
                elif mutate == "auth":
                    for value in auth.values():
                        value["content"] = {**value["content"], "x": bad}
                        if version not in ("1", "2"):  # make v3+ hash the create event
                            value.pop("event_id", None)
                else:
                    pdu[mutate] = f"@{bad}:{bad}"
                only_auth_errors(check_auth, version, pdu, auth)
