"""Predefined rules, merging, evaluation order and actions (push.md "Push Rules")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketserver.core.push_rules import (
    RULE_KINDS,
    PushContext,
    PushRule,
    default_push_rules,
    evaluate,
    has_highlight,
    is_notifying,
    merge_rules,
    notification_power_levels,
    ruleset_to_json,
    tweaks_for_actions,
)

ME = "@me:example.org"
OTHER = "@other:example.org"
ROOM = "!room:example.org"
SPEC_PUSH = (
    Path(__file__).resolve().parents[3]
    / "shared/matrix-spec/content/client-server-api/modules/push.md"
)

SPEC_ORDER = {
    "override": [
        ".m.rule.master",
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.contains_display_name",
        ".m.rule.is_room_mention",
        ".m.rule.roomnotif",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ],
    "content": [".m.rule.contains_user_name"],
    "room": [],
    "sender": [],
    "underride": [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ],
}

LEGACY = {".m.rule.contains_display_name", ".m.rule.roomnotif", ".m.rule.contains_user_name"}
"""Kept after v1.17 removed them, as Synapse keeps them (core/push_defaults.py)."""

SOUND = {"set_tweak": "sound", "value": "default"}
HIGHLIGHT = {"set_tweak": "highlight"}


def _ctx(**kw: object) -> PushContext:
    base: dict[str, object] = {
        "user_id": ME,
        "user_display_name": "Me Myself",
        "room_member_count": 5,
        "sender_power_level": 0,
        "notification_power_levels": {"room": 50},
    }
    base.update(kw)
    return PushContext(**base)  # type: ignore[arg-type]


def _msg(body: str = "hello", **content: object) -> dict[str, object]:
    return {
        "type": "m.room.message",
        "room_id": ROOM,
        "sender": OTHER,
        "content": {"msgtype": "m.text", "body": body, **content},
    }


def _defaults() -> list[PushRule]:
    return merge_rules(default_push_rules(ME), {})


def test_default_rule_ids_and_order_follow_the_spec() -> None:
    rules = default_push_rules(ME)
    assert list(rules) == list(RULE_KINDS)
    assert {k: [r["rule_id"] for r in v] for k, v in rules.items()} == SPEC_ORDER
    enabled = {r["rule_id"]: r["enabled"] for v in rules.values() for r in v}
    assert enabled.pop(".m.rule.master") is False
    assert all(enabled.values())
    assert all(r["default"] is True for v in rules.values() for r in v)


def test_legacy_body_mention_rules_are_v1_16s() -> None:
    # push.md v1.16 "Predefined Rules" (removed from the list in v1.17; Synapse keeps them).
    rules = {r["rule_id"]: r for v in default_push_rules(ME).values() for r in v}
    assert rules[".m.rule.contains_display_name"] == {
        "rule_id": ".m.rule.contains_display_name",
        "default": True,
        "enabled": True,
        "conditions": [{"kind": "contains_display_name"}],
        "actions": ["notify", SOUND, HIGHLIGHT],
    }
    assert rules[".m.rule.roomnotif"] == {
        "rule_id": ".m.rule.roomnotif",
        "default": True,
        "enabled": True,
        "conditions": [
            {"kind": "event_match", "key": "content.body", "pattern": "@room"},
            {"kind": "sender_notification_permission", "key": "room"},
        ],
        "actions": ["notify", HIGHLIGHT],
    }
    assert rules[".m.rule.contains_user_name"] == {
        "rule_id": ".m.rule.contains_user_name",
        "default": True,
        "enabled": True,
        "pattern": "me",
        "actions": ["notify", SOUND, HIGHLIGHT],
    }


LEGACY_CASES: list[tuple[str, dict[str, object], PushContext, list[object] | None]] = [
    ("user name in body", _msg("hi me!"), _ctx(), ["notify", SOUND, HIGHLIGHT]),
    ("user name inside a word", _msg("hi meme"), _ctx(), ["notify"]),
    ("display name in body", _msg("ping Me Myself"), _ctx(), ["notify", SOUND, HIGHLIGHT]),
    (
        "@room by a moderator",
        _msg("@room look"),
        _ctx(sender_power_level=50),
        ["notify", HIGHLIGHT],
    ),
    ("@room by a user", _msg("@room look"), _ctx(), ["notify"]),
    # An event with m.mentions (even empty) skips all three legacy rules.
    ("user name, m.mentions", _msg("hi me!", **{"m.mentions": {}}), _ctx(), ["notify"]),
    ("display name, m.mentions", _msg("Me Myself", **{"m.mentions": {}}), _ctx(), ["notify"]),
    (
        "@room, m.mentions",
        _msg("@room", **{"m.mentions": {}}),
        _ctx(sender_power_level=50),
        ["notify"],
    ),
    (
        "m.mentions naming me",
        _msg("hi", **{"m.mentions": {"user_ids": [ME]}}),
        _ctx(),
        ["notify", SOUND, HIGHLIGHT],
    ),
]


@pytest.mark.parametrize(("event", "ctx", "expected"), [c[1:] for c in LEGACY_CASES])
def test_legacy_body_mention_rules(
    event: dict[str, object], ctx: PushContext, expected: list[object] | None
) -> None:
    assert evaluate(_defaults(), event, ctx) == expected


def test_legacy_rule_can_be_disabled() -> None:
    rules = merge_rules(
        default_push_rules(ME), {}, {("content", ".m.rule.contains_user_name"): False}
    )
    assert evaluate(rules, _msg("hi me!"), _ctx()) == ["notify"]


def _spec_definitions() -> list[dict[str, object]]:
    if not SPEC_PUSH.exists():
        pytest.skip("matrix-spec checkout not found")
    text = SPEC_PUSH.read_text()
    section = text[text.index("#### Predefined Rules") : text.index("#### Push Rules: API")]
    blocks = re.findall(r"Definition:\s*```json\n(.*?)```", section, re.S)
    return [json.loads(b.replace("[the user's Matrix ID]", ME)) for b in blocks]


def test_default_rules_equal_the_spec_definitions() -> None:
    ours = [r for kind in RULE_KINDS for r in default_push_rules(ME)[kind]]
    assert [r for r in ours if r["rule_id"] not in LEGACY] == _spec_definitions()


def test_default_rules_are_fresh_copies() -> None:
    first = default_push_rules(ME)
    first["override"][2]["actions"].append("mutated")  # type: ignore[attr-defined]
    assert "mutated" not in default_push_rules(ME)["override"][2]["actions"]  # type: ignore[operator]


ONE_TO_ONE = _ctx(room_member_count=2)
MOD = _ctx(sender_power_level=50)

# (description, event, context, expected actions)
PREDEFINED: list[tuple[str, dict[str, object], PushContext, list[object] | None]] = [
    ("message in group", _msg(), _ctx(), ["notify"]),
    ("message one-to-one", _msg(), ONE_TO_ONE, ["notify", SOUND]),
    ("notice suppressed", _msg(msgtype="m.notice"), ONE_TO_ONE, []),
    (
        "invite for me",
        {
            "type": "m.room.member",
            "state_key": ME,
            "sender": OTHER,
            "content": {"membership": "invite"},
        },
        _ctx(),
        ["notify", SOUND],
    ),
    (
        "invite for someone else",
        {
            "type": "m.room.member",
            "state_key": "@third:x",
            "sender": OTHER,
            "content": {"membership": "invite"},
        },
        _ctx(),
        [],
    ),
    (
        "join",
        {
            "type": "m.room.member",
            "state_key": OTHER,
            "sender": OTHER,
            "content": {"membership": "join"},
        },
        ONE_TO_ONE,
        [],
    ),
    (
        "user mention",
        _msg("hi", **{"m.mentions": {"user_ids": [ME]}}),
        _ctx(),
        ["notify", SOUND, HIGHLIGHT],
    ),
    ("other user mention", _msg("hi", **{"m.mentions": {"user_ids": [OTHER]}}), _ctx(), ["notify"]),
    (
        "@room by moderator",
        _msg("@room", **{"m.mentions": {"room": True}}),
        MOD,
        ["notify", HIGHLIGHT],
    ),
    ("@room by nobody", _msg("@room", **{"m.mentions": {"room": True}}), _ctx(), ["notify"]),
    ("@room false", _msg("@room", **{"m.mentions": {"room": False}}), MOD, ["notify"]),
    ("@room without m.mentions: legacy rule", _msg("@room"), MOD, ["notify", HIGHLIGHT]),
    (
        "my name in body: legacy rule",
        _msg("hey Me Myself and me"),
        _ctx(),
        ["notify", SOUND, HIGHLIGHT],
    ),
    (
        "tombstone",
        {"type": "m.room.tombstone", "state_key": "", "sender": OTHER, "content": {}},
        _ctx(),
        ["notify", HIGHLIGHT],
    ),
    (
        "tombstone-typed message event",
        {"type": "m.room.tombstone", "sender": OTHER, "content": {}},
        _ctx(),
        None,
    ),
    (
        "reaction",
        {
            "type": "m.reaction",
            "sender": OTHER,
            "content": {"m.relates_to": {"rel_type": "m.annotation", "key": "x"}},
        },
        ONE_TO_ONE,
        [],
    ),
    (
        "server acl",
        {"type": "m.room.server_acl", "state_key": "", "sender": OTHER, "content": {}},
        _ctx(),
        [],
    ),
    (
        "edit",
        _msg("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}),
        ONE_TO_ONE,
        [],
    ),
    (
        "edit mentioning me",
        _msg(
            "* hi",
            **{"m.mentions": {"user_ids": [ME]}, "m.relates_to": {"rel_type": "m.replace"}},
        ),
        _ctx(),
        ["notify", SOUND, HIGHLIGHT],  # is_user_mention comes before suppress_edits
    ),
    ("thread reply", _msg("x", **{"m.relates_to": {"rel_type": "m.thread"}}), _ctx(), ["notify"]),
    (
        "call invite",
        {"type": "m.call.invite", "sender": OTHER, "content": {}},
        _ctx(),
        ["notify", {"set_tweak": "sound", "value": "ring"}],
    ),
    (
        "encrypted one-to-one",
        {"type": "m.room.encrypted", "sender": OTHER, "content": {}},
        ONE_TO_ONE,
        ["notify", SOUND],
    ),
    (
        "encrypted group",
        {"type": "m.room.encrypted", "sender": OTHER, "content": {}},
        _ctx(),
        ["notify"],
    ),
    (
        "topic change",
        {"type": "m.room.topic", "state_key": "", "sender": OTHER, "content": {}},
        _ctx(),
        None,
    ),
    ("custom event", {"type": "org.example", "sender": OTHER, "content": {}}, _ctx(), None),
    ("my own message", {**_msg(), "sender": ME}, ONE_TO_ONE, None),
]


@pytest.mark.parametrize(
    ("event", "ctx", "expected"),
    [pytest.param(e, c, x, id=d) for d, e, c, x in PREDEFINED],
)
def test_predefined_rules(event: dict[str, object], ctx: PushContext, expected: object) -> None:
    assert evaluate(_defaults(), event, ctx) == expected


def test_master_rule_when_enabled_silences_everything() -> None:
    rules = merge_rules(
        default_push_rules(ME),
        {"override": [{"rule_id": "loud", "conditions": [], "actions": ["notify"]}]},
        enabled_overrides={("override", ".m.rule.master"): True},
    )
    assert rules[0].rule_id == ".m.rule.master"
    assert rules[1].rule_id == "loud"
    for _, event, ctx, _ in PREDEFINED:
        if event.get("sender") != ME:
            assert evaluate(rules, event, ctx) == []


def test_user_rules_come_before_defaults_of_their_kind() -> None:
    user: dict[str, list[dict[str, object]]] = {
        "override": [{"rule_id": "all", "conditions": [], "actions": ["notify", HIGHLIGHT]}],
        "underride": [{"rule_id": "u", "conditions": [], "actions": []}],
        "content": [{"rule_id": "cake", "pattern": "cake", "actions": ["notify"]}],
        "room": [{"rule_id": ROOM, "actions": []}],
        "sender": [{"rule_id": OTHER, "actions": []}],
    }
    rules = merge_rules(default_push_rules(ME), user)
    order = [(r.kind, r.rule_id) for r in rules]
    assert order[:3] == [
        ("override", ".m.rule.master"),
        ("override", "all"),
        ("override", ".m.rule.suppress_notices"),
    ]
    kinds = [k for k, _ in order]
    assert kinds == sorted(kinds, key=RULE_KINDS.index)  # kinds in spec order
    assert order.index(("underride", "u")) < order.index(("underride", ".m.rule.call"))
    assert [r.default for r in rules if r.rule_id in {"all", "u", "cake", ROOM, OTHER}] == [
        False
    ] * 5


ORDERING = [
    # (user rules, event, context, expected actions): which rule wins
    (  # content rule beats underride .m.rule.message
        {"content": [{"rule_id": "tea", "pattern": "tea", "actions": ["notify", HIGHLIGHT]}]},
        _msg("It's time for tea"),
        _ctx(),
        ["notify", HIGHLIGHT],
    ),
    (  # within a kind, the first listed rule wins ("time" before "tea")
        {
            "content": [
                {"rule_id": "time", "pattern": "time", "actions": ["notify", SOUND]},
                {"rule_id": "tea", "pattern": "tea", "actions": ["notify", HIGHLIGHT]},
            ]
        },
        _msg("It's time for tea"),
        _ctx(),
        ["notify", SOUND],
    ),
    (  # content rules match at word boundaries only
        {"content": [{"rule_id": "tea", "pattern": "tea", "actions": []}]},
        _msg("steady"),
        _ctx(),
        ["notify"],
    ),
    (  # override (default suppress_notices) beats content
        {"content": [{"rule_id": "tea", "pattern": "tea", "actions": ["notify"]}]},
        _msg("tea", msgtype="m.notice"),
        _ctx(),
        [],
    ),
    (  # content beats room
        {
            "content": [{"rule_id": "tea", "pattern": "tea", "actions": ["notify", SOUND]}],
            "room": [{"rule_id": ROOM, "actions": []}],
        },
        _msg("tea"),
        _ctx(),
        ["notify", SOUND],
    ),
    (  # room beats sender
        {
            "room": [{"rule_id": ROOM, "actions": []}],
            "sender": [{"rule_id": OTHER, "actions": ["notify", SOUND]}],
        },
        _msg(),
        _ctx(),
        [],
    ),
    (  # room rule for another room does not match
        {"room": [{"rule_id": "!else:x", "actions": []}]},
        _msg(),
        _ctx(),
        ["notify"],
    ),
    (  # sender beats underride
        {"sender": [{"rule_id": OTHER, "actions": ["notify", SOUND]}]},
        _msg(),
        _ctx(),
        ["notify", SOUND],
    ),
    (  # sender rule IDs are compared exactly, not as globs or case-insensitively
        {"sender": [{"rule_id": OTHER.upper(), "actions": []}]},
        _msg(),
        _ctx(),
        ["notify"],
    ),
    (  # user underride runs before default underride
        {"underride": [{"rule_id": "quiet", "conditions": [], "actions": []}]},
        _msg(),
        _ctx(),
        [],
    ),
    (  # user override beats default override rules (except master)
        {
            "override": [
                {
                    "rule_id": "notices",
                    "conditions": [
                        {"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}
                    ],
                    "actions": ["notify"],
                }
            ]
        },
        _msg(msgtype="m.notice"),
        _ctx(),
        ["notify"],
    ),
    (  # a rule with an unknown condition is effectively disabled
        {"override": [{"rule_id": "x", "conditions": [{"kind": "org.unknown"}], "actions": []}]},
        _msg(),
        _ctx(),
        ["notify"],
    ),
    (  # disabled user rule is skipped
        {"override": [{"rule_id": "x", "conditions": [], "actions": [], "enabled": False}]},
        _msg(),
        _ctx(),
        ["notify"],
    ),
    (  # legacy actions are ignored: dont_notify == []
        {"override": [{"rule_id": "x", "conditions": [], "actions": ["dont_notify"]}]},
        _msg(),
        _ctx(),
        [],
    ),
    (  # coalesce is a no-op too
        {"override": [{"rule_id": "x", "conditions": [], "actions": ["coalesce", "notify"]}]},
        _msg(),
        _ctx(),
        ["notify"],
    ),
    (  # user rules named like server-default ones are ignored
        {"override": [{"rule_id": ".m.rule.evil", "conditions": [], "actions": []}]},
        _msg(),
        _ctx(),
        ["notify"],
    ),
]


@pytest.mark.parametrize(("user", "event", "ctx", "expected"), ORDERING)
def test_rule_ordering(
    user: dict[str, list[dict[str, object]]],
    event: dict[str, object],
    ctx: PushContext,
    expected: object,
) -> None:
    assert evaluate(merge_rules(default_push_rules(ME), user), event, ctx) == expected


def test_disabling_and_changing_default_rules() -> None:
    defaults = default_push_rules(ME)
    disabled = merge_rules(
        defaults, {}, enabled_overrides={("underride", ".m.rule.message"): False}
    )
    assert evaluate(disabled, _msg(), _ctx()) is None
    louder = merge_rules(
        defaults, {}, actions_overrides={("underride", ".m.rule.message"): ["notify", SOUND]}
    )
    assert evaluate(louder, _msg(), _ctx()) == ["notify", SOUND]
    # overrides are keyed by kind: the same ID under another kind changes nothing
    other_kind = merge_rules(
        defaults, {}, enabled_overrides={("override", ".m.rule.message"): False}
    )
    assert evaluate(other_kind, _msg(), _ctx()) == ["notify"]
    # enabled_overrides wins over a user rule's own flag
    user = {"override": [{"rule_id": "x", "conditions": [], "actions": [], "enabled": True}]}
    off = merge_rules(defaults, user, enabled_overrides={("override", "x"): False})
    assert evaluate(off, _msg(), _ctx()) == ["notify"]


def test_evaluate_returns_a_fresh_list() -> None:
    rules = _defaults()
    first = evaluate(rules, _msg(), _ctx())
    assert first is not None
    first.append("x")
    assert evaluate(rules, _msg(), _ctx()) == ["notify"]


def test_ruleset_to_json_round_trip() -> None:
    user = {
        "content": [{"rule_id": "cake", "pattern": "cake*lie", "actions": ["notify"]}],
        "room": [{"rule_id": ROOM, "actions": ["dont_notify"]}],
    }
    out = ruleset_to_json(merge_rules(default_push_rules(ME), user))
    assert list(out) == list(RULE_KINDS)
    assert out["content"] == [
        {
            "rule_id": "cake",
            "default": False,
            "enabled": True,
            "actions": ["notify"],
            "pattern": "cake*lie",
        },
        *default_push_rules(ME)["content"],  # user rules come before the defaults
    ]
    # Historical actions are echoed as stored (Synapse does; evaluation ignores them).
    assert out["room"] == [
        {"rule_id": ROOM, "default": False, "enabled": True, "actions": ["dont_notify"]}
    ]
    assert out["override"] == default_push_rules(ME)["override"]
    assert out["underride"] == default_push_rules(ME)["underride"]


ACTIONS: list[tuple[list[object] | None, bool, bool, dict[str, object]]] = [
    # (actions, notifying, highlight, tweaks)
    (None, False, False, {}),
    ([], False, False, {}),
    (["notify"], True, False, {}),
    (["notify", SOUND], True, False, {"sound": "default"}),
    (["notify", HIGHLIGHT], True, True, {"highlight": True}),  # value absent means true
    ([{"set_tweak": "highlight", "value": False}], False, False, {"highlight": False}),
    ([{"set_tweak": "highlight", "value": True}], False, True, {"highlight": True}),
    ([{"set_tweak": "highlight", "value": "yes"}], False, False, {"highlight": "yes"}),
    ([HIGHLIGHT, {"set_tweak": "highlight", "value": False}], False, False, {"highlight": False}),
    (["dont_notify"], False, False, {}),
    (["coalesce"], False, False, {}),
    ([{"set_tweak": "led", "value": "green"}], False, False, {"led": "green"}),
    ([{"set_tweak": 5}, "notify", 7, None], True, False, {}),
]


@pytest.mark.parametrize(("actions", "notifying", "highlight", "tweaks"), ACTIONS)
def test_action_helpers(
    actions: list[object] | None, notifying: bool, highlight: bool, tweaks: dict[str, object]
) -> None:
    assert is_notifying(actions) is notifying
    assert has_highlight(actions) is highlight
    assert tweaks_for_actions(actions) == tweaks


NOTIFICATION_LEVELS = [
    (None, True, {"room": 50}),
    ({}, True, {"room": 50}),
    ({"notifications": {"room": 20}}, True, {"room": 20}),
    ({"notifications": {"room": 20, "other": 70}}, True, {"room": 20, "other": 70}),
    ({"notifications": {"room": "20"}}, True, {"room": 50}),  # v10+: only integers
    ({"notifications": {"room": "20"}}, False, {"room": 20}),  # older rooms: stringy
    ({"notifications": "bad"}, True, {"room": 50}),
]


@pytest.mark.parametrize(("content", "integer_only", "expected"), NOTIFICATION_LEVELS)
def test_notification_power_levels(
    content: dict[str, object] | None, integer_only: bool, expected: dict[str, int]
) -> None:
    assert notification_power_levels(content, integer_only=integer_only) == expected


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = st.sampled_from(
    ["type", "content", "state_key", "sender", "room_id", "content.body", "content.m\\.mentions"]
)
_EVENTS = st.dictionaries(st.text(max_size=10) | _KEYS, _JSON, max_size=6) | st.fixed_dictionaries(
    {"type": _JSON, "content": _JSON, "sender": _JSON, "state_key": _JSON, "room_id": _JSON}
)
_RULES = st.dictionaries(
    st.sampled_from([*RULE_KINDS, "bogus"]),
    st.lists(
        st.dictionaries(
            st.sampled_from(["rule_id", "conditions", "actions", "pattern", "enabled"]), _JSON
        ),
        max_size=3,
    ),
)


@settings(max_examples=300, deadline=None)
@given(event=_EVENTS, user=_RULES, count=st.integers(-3, 10), level=st.integers(-100, 100))
def test_evaluate_never_raises(
    event: dict[str, object], user: dict[str, list[dict[str, object]]], count: int, level: int
) -> None:
    rules = merge_rules(default_push_rules(ME), user)
    ctx = _ctx(room_member_count=count, sender_power_level=level)
    result = evaluate(rules, event, ctx)
    assert result is None or isinstance(result, list)
    is_notifying(result)
    has_highlight(result)


@settings(max_examples=200, deadline=None)
@given(conditions=st.lists(_JSON, max_size=3), event=_EVENTS)
def test_arbitrary_conditions_never_raise(
    conditions: list[object], event: dict[str, object]
) -> None:
    rule = PushRule("override", "x", False, True, ("notify",), tuple(conditions))
    assert evaluate([rule], event, _ctx()) in (None, ["notify"])


def test_historical_actions_are_kept_but_never_notify() -> None:
    """push.md "Historical Actions": a ["dont_notify"] rule equals a [] rule when
    evaluated, yet the stored rule still shows what the client wrote (as Synapse)."""
    user = {"override": [{"rule_id": "mute", "conditions": [], "actions": ["dont_notify"]}]}
    rules = merge_rules(default_push_rules(ME), user)
    mute = next(r for r in rules if r.rule_id == "mute")
    assert mute.actions == ("dont_notify",)
    assert mute.effective_actions == []
    assert mute.to_json()["actions"] == ["dont_notify"]
    assert evaluate(rules, _msg(), _ctx()) == []
    assert not is_notifying(evaluate(rules, _msg(), _ctx()))
