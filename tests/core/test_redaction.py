"""Tests for pocketserver.core.redaction, table-driven from each version's keep-lists.

Spec: rooms/fragments/v1-redactions.md (v1-v5), v6-redactions.md (v6, v7),
rooms/v8.md "Redactions" (v8), v9-redactions.md (v9, v10), v11-redactions.md
(v11, v12).
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocketserver.core.redaction import redact
from pocketserver.core.room_versions import KNOWN_ROOM_VERSIONS, RedactionRules

ALL_VERSIONS = [str(n) for n in range(1, 13)]
RULES_OF = {
    **dict.fromkeys(["1", "2", "3", "4", "5"], RedactionRules.V1),
    **dict.fromkeys(["6", "7"], RedactionRules.V6),
    "8": RedactionRules.V8,
    **dict.fromkeys(["9", "10"], RedactionRules.V9),
    **dict.fromkeys(["11", "12"], RedactionRules.V11),
}

TOP_V1 = {
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "prev_state",
    "auth_events",
    "origin",
    "origin_server_ts",
    "membership",
}
TOP_V11 = TOP_V1 - {"prev_state", "origin", "membership"}
DROPPED_ALWAYS = {"unsigned", "redacts", "age_ts", "outlier", "destinations", "custom"}


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_version_to_rules_mapping(version: str) -> None:
    # Which fragment each rooms/v<N>.md page uses (checked against the spec pages).
    assert KNOWN_ROOM_VERSIONS[version].redaction is RULES_OF[version]


def _full_event(event_type: str, content: dict) -> dict:
    event = {k: f"value-{k}" for k in TOP_V1 | DROPPED_ALWAYS}
    event.update(type=event_type, content=content, depth=5, unsigned={"age_ts": 1})
    return event


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_top_level_keys(version: str) -> None:
    event = _full_event("m.room.message", {"body": "hi"})
    expected = TOP_V11 if RULES_OF[version] is RedactionRules.V11 else TOP_V1
    out = redact(event, version)
    assert set(out) == expected
    assert out["content"] == {}
    assert "unsigned" not in out  # federation form


PL_V1 = {
    "ban": 50,
    "events": {"m.room.name": 100},
    "events_default": 0,
    "kick": 50,
    "redact": 50,
    "state_default": 50,
    "users": {"@a:x": 100},
    "users_default": 0,
}
PL_FULL = {**PL_V1, "invite": 0, "notifications": {"room": 50}, "historical": 100}
MEMBER_FULL = {
    "membership": "join",
    "displayname": "A",
    "avatar_url": "mxc://x/y",
    "join_authorised_via_users_server": "@b:x",
    "third_party_invite": {"display_name": "d", "signed": {"mxid": "@a:x", "token": "t"}},
    "reason": "r",
}
CREATE_FULL = {"creator": "@a:x", "room_version": "1", "m.federate": False, "predecessor": {}}
JR_FULL = {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "x": 1}

_V1 = RedactionRules.V1
_V6 = RedactionRules.V6
_V8 = RedactionRules.V8
_V9 = RedactionRules.V9
_V11 = RedactionRules.V11
_UP_TO_V10 = (_V1, _V6, _V8, _V9)

# (event type, full content, {rule sets: expected content})
CONTENT_TABLE: list[tuple[str, dict, dict[tuple[RedactionRules, ...], dict]]] = [
    (
        "m.room.member",
        MEMBER_FULL,
        {
            (_V1, _V6, _V8): {"membership": "join"},
            (_V9,): {"membership": "join", "join_authorised_via_users_server": "@b:x"},
            (_V11,): {
                "membership": "join",
                "join_authorised_via_users_server": "@b:x",
                "third_party_invite": {"signed": {"mxid": "@a:x", "token": "t"}},
            },
        },
    ),
    (
        "m.room.member",
        {"membership": "invite", "third_party_invite": {"display_name": "no signed"}},
        # v11: the object is kept, holding only ``signed`` (here: nothing); as Synapse.
        {
            _UP_TO_V10: {"membership": "invite"},
            (_V11,): {"membership": "invite", "third_party_invite": {}},
        },
    ),
    (
        "m.room.member",
        {"membership": "invite", "third_party_invite": "not an object"},
        {(*_UP_TO_V10, _V11): {"membership": "invite"}},
    ),
    ("m.room.create", CREATE_FULL, {_UP_TO_V10: {"creator": "@a:x"}, (_V11,): CREATE_FULL}),
    (
        "m.room.join_rules",
        JR_FULL,
        {
            (_V1, _V6): {"join_rule": "restricted"},
            (_V8, _V9, _V11): {"join_rule": "restricted", "allow": JR_FULL["allow"]},
        },
    ),
    ("m.room.power_levels", PL_FULL, {_UP_TO_V10: PL_V1, (_V11,): {**PL_V1, "invite": 0}}),
    (
        "m.room.aliases",
        {"aliases": ["#a:x"], "other": 1},
        {(_V1,): {"aliases": ["#a:x"]}, (_V6, _V8, _V9, _V11): {}},
    ),
    (
        "m.room.history_visibility",
        {"history_visibility": "shared", "other": 1},
        {(*_UP_TO_V10, _V11): {"history_visibility": "shared"}},
    ),
    (
        "m.room.redaction",
        {"redacts": "$x", "reason": "spam"},
        {_UP_TO_V10: {}, (_V11,): {"redacts": "$x"}},
    ),
    ("m.room.message", {"body": "hi", "msgtype": "m.text"}, {(*_UP_TO_V10, _V11): {}}),
    ("m.room.name", {"name": "Room"}, {(*_UP_TO_V10, _V11): {}}),
    ("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}, {(*_UP_TO_V10, _V11): {}}),
    ("m.room.third_party_invite", {"public_key": "k"}, {(*_UP_TO_V10, _V11): {}}),
    ("m.room.member", {"displayname": "no membership"}, {(*_UP_TO_V10, _V11): {}}),
]


def _content_cases():
    for event_type, content, by_rules in CONTENT_TABLE:
        for rules_group, expected in by_rules.items():
            for version in ALL_VERSIONS:
                if RULES_OF[version] in rules_group:
                    yield pytest.param(event_type, content, version, expected)


@pytest.mark.parametrize(("event_type", "content", "version", "expected"), list(_content_cases()))
def test_content_keep_lists(event_type: str, content: dict, version: str, expected: dict) -> None:
    event = _full_event(event_type, content)
    before = copy.deepcopy(event)
    out = redact(event, version)
    assert out["content"] == expected
    assert event == before  # input untouched


def test_each_table_row_covers_every_version() -> None:
    for _type, _content, by_rules in CONTENT_TABLE:
        covered = [r for group in by_rules for r in group]
        assert sorted(covered, key=lambda r: r.value) == list(RedactionRules)


def test_output_does_not_alias_input() -> None:
    event = _full_event("m.room.power_levels", copy.deepcopy(PL_FULL))
    out = redact(event, "11")
    out["content"]["users"]["@evil:x"] = 100
    out["signatures"] = "changed"
    assert "@evil:x" not in event["content"]["users"]
    nested = _full_event("m.room.create", {"predecessor": {"room_id": "!a:x"}})
    out = redact(nested, "11")
    out["content"]["predecessor"]["room_id"] = "changed"
    assert nested["content"]["predecessor"]["room_id"] == "!a:x"


@pytest.mark.parametrize("content", [None, "x", [1], 5])
def test_non_object_content_becomes_empty(content: object) -> None:
    event = {"type": "m.room.member", "content": content, "sender": "@a:x"}
    assert redact(event, "11") == {"type": "m.room.member", "content": {}, "sender": "@a:x"}


def test_missing_content_and_odd_type() -> None:
    assert redact({"type": 5, "content": {"a": 1}}, "1") == {"type": 5, "content": {}}
    assert redact({"sender": "@a:x"}, "12") == {"sender": "@a:x", "content": {}}


def test_unknown_version() -> None:
    with pytest.raises(ValueError, match="unknown room version"):
        redact({}, "999")


def test_redacting_twice_is_stable() -> None:
    for version in ALL_VERSIONS:
        for event_type, content, _ in CONTENT_TABLE:
            once = redact(_full_event(event_type, content), version)
            assert redact(once, version) == once


# --- cross-check with Synapse (installed in the test venv) -----------------------------

HAVE_SYNAPSE = importlib.util.find_spec("synapse") is not None

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), st.text())
_json = st.recursive(
    _json_leaf,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
    ),
    max_leaves=8,
)
_type = st.sampled_from(
    [
        "m.room.member",
        "m.room.create",
        "m.room.join_rules",
        "m.room.power_levels",
        "m.room.aliases",
        "m.room.history_visibility",
        "m.room.redaction",
        "m.room.message",
    ]
)
# room_id is generated too, so the v12 create-event special case is exercised.
_content_key = st.sampled_from(
    [*PL_FULL, *MEMBER_FULL, *CREATE_FULL, *JR_FULL, "aliases", "history_visibility", "redacts"]
)
_content = st.one_of(
    st.dictionaries(_content_key, _json, max_size=6),
    st.fixed_dictionaries(
        {
            "membership": st.just("invite"),
            "third_party_invite": st.dictionaries(
                st.sampled_from(["signed", "display_name"]), _json, max_size=2
            ),
        }
    ),
)
_top_key = st.sampled_from(sorted((TOP_V1 | DROPPED_ALWAYS) - {"type", "content", "unsigned"}))


@pytest.mark.skipif(not HAVE_SYNAPSE, reason="matrix-synapse not installed")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(ALL_VERSIONS),
    event_type=_type,
    content=_content,
    extra=st.dictionaries(_top_key, st.text(max_size=4), max_size=6),
)
def test_matches_synapse(version: str, event_type: str, content: dict, extra: dict) -> None:
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS as SYN_VERSIONS
    from synapse.synapse_rust.events import redact_event_dict

    event = {**extra, "type": event_type, "content": content, "unsigned": {"age_ts": 1}}
    theirs = redact_event_dict(SYN_VERSIONS[version], event)
    # Synapse keeps some ``unsigned`` keys for its client form; the federation
    # form (what is hashed and signed) has no ``unsigned``.
    theirs.pop("unsigned", None)
    assert redact(event, version) == theirs


def test_v12_create_room_id_dropped_like_synapse() -> None:
    # Synapse drops room_id from m.room.create in MSC4291 (v12) rooms; spec keeps it.
    event = {"type": "m.room.create", "room_id": "!r:x", "content": {"a": 1}, "state_key": ""}
    assert redact(event, "12") == {"type": "m.room.create", "content": {"a": 1}, "state_key": ""}
    assert redact(event, "11")["room_id"] == "!r:x"
    assert redact({**event, "type": "m.room.member"}, "12")["room_id"] == "!r:x"
