"""Validation of user push rules (pushrules.yaml ``setPushRule``)."""

from __future__ import annotations

import pytest

from pocketserver.core.push_rules import PushRuleError, place_rule, validate_actions, validate_rule

VALID = [
    # (kind, rule_id, body, stored rule)
    (
        "content",
        "nocake",
        {"pattern": "cake*lie", "actions": ["notify"]},
        {"rule_id": "nocake", "actions": ["notify"], "pattern": "cake*lie"},
    ),
    (
        "override",
        "o",
        {"conditions": [{"kind": "event_match", "key": "type", "pattern": "m.*"}], "actions": []},
        {
            "rule_id": "o",
            "actions": [],
            "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.*"}],
        },
    ),
    # conditions are optional: "A rule with no conditions always matches"
    (
        "underride",
        "u",
        {"actions": ["notify"]},
        {"rule_id": "u", "actions": ["notify"], "conditions": []},
    ),
    # unknown condition kinds are kept (they never match)
    (
        "override",
        "o",
        {"conditions": [{"kind": "org.example.future", "x": 1}], "actions": []},
        {"rule_id": "o", "actions": [], "conditions": [{"kind": "org.example.future", "x": 1}]},
    ),
    (
        "override",
        "all-kinds",
        {
            "conditions": [
                {"kind": "event_property_is", "key": "content.x", "value": None},
                {"kind": "event_property_contains", "key": "content.x", "value": 5},
                {"kind": "contains_display_name"},
                {"kind": "room_member_count", "is": "<3"},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            "actions": [],
        },
        None,
    ),
    ("room", "!abc:example.org", {"actions": []}, {"rule_id": "!abc:example.org", "actions": []}),
    # Not a room ID (SyTest names a room rule by an alias): accepted, as Synapse does.
    ("room", "#spam:example.com", {"actions": []}, {"rule_id": "#spam:example.com", "actions": []}),
    (
        "sender",
        "@bob:example.org",
        {"actions": ["notify"]},
        {"rule_id": "@bob:example.org", "actions": ["notify"]},
    ),
    # historical actions are stripped; other keys are ignored
    (
        "sender",
        "@bob:example.org",
        {"actions": ["dont_notify"], "conditions": [{"kind": "x"}], "pattern": "p"},
        {"rule_id": "@bob:example.org", "actions": ["dont_notify"]},
    ),
    (
        "content",
        "c",
        {
            "pattern": "",
            "actions": [
                "notify",
                "coalesce",
                {"set_tweak": "sound", "value": "default"},
                {"set_tweak": "highlight"},
                {"set_tweak": "highlight", "value": False},
                {"set_tweak": "org.example.led", "value": {"colour": "green"}},
            ],
        },
        None,
    ),
]


@pytest.mark.parametrize(("kind", "rule_id", "body", "stored"), VALID)
def test_valid_rules(
    kind: str, rule_id: str, body: dict[str, object], stored: dict[str, object] | None
) -> None:
    result = validate_rule(kind, rule_id, body)
    if stored is not None:
        assert result == stored
    assert result["actions"] == body["actions"]  # historical actions kept, as Synapse


INVALID = [
    # (kind, rule_id, body, fragment of the message)
    ("global", "x", {"actions": []}, "kind"),
    ("content", "", {"pattern": "x", "actions": []}, "empty"),
    ("content", ".m.rule.mine", {"pattern": "x", "actions": []}, "reserved"),
    ("override", ".m.rule.master", {"actions": []}, "reserved"),
    ("content", "a/b", {"pattern": "x", "actions": []}, "'/'"),
    ("content", "a\\b", {"pattern": "x", "actions": []}, "'/'"),
    ("content", "c", {"actions": []}, "pattern"),
    ("content", "c", {"pattern": 5, "actions": []}, "pattern"),
    ("content", "c", {"pattern": "x"}, "actions"),
    ("override", "o", {"actions": "notify"}, "list"),
    ("override", "o", {"actions": ["notify_me"]}, "unrecognised"),
    ("override", "o", {"actions": [5]}, "unrecognised"),
    ("override", "o", {"actions": [{"tweak": "sound"}]}, "unrecognised"),
    ("override", "o", {"actions": [{"set_tweak": 5}]}, "set_tweak"),
    ("override", "o", {"actions": [{"set_tweak": ""}]}, "set_tweak"),
    ("override", "o", {"actions": [{"set_tweak": "highlight", "value": "yes"}]}, "boolean"),
    ("override", "o", {"actions": [{"set_tweak": "sound", "value": 1}]}, "string"),
    ("override", "o", {"actions": [], "conditions": {}}, "list"),
    ("override", "o", {"actions": [], "conditions": ["event_match"]}, "object"),
    ("override", "o", {"actions": [], "conditions": [{"key": "type"}]}, "kind"),
    (
        "override",
        "o",
        {"actions": [], "conditions": [{"kind": "event_match", "key": "type"}]},
        "pattern",
    ),
    (
        "override",
        "o",
        {"actions": [], "conditions": [{"kind": "event_match", "pattern": "*"}]},
        "key",
    ),
    (
        "underride",
        "u",
        {"actions": [], "conditions": [{"kind": "room_member_count", "is": 2}]},
        "is",
    ),
    (
        "underride",
        "u",
        {"actions": [], "conditions": [{"kind": "sender_notification_permission"}]},
        "key",
    ),
    (
        "underride",
        "u",
        {"actions": [], "conditions": [{"kind": "event_property_is", "key": "content.x"}]},
        "value",
    ),
    (
        "underride",
        "u",
        {
            "actions": [],
            "conditions": [{"kind": "event_property_contains", "key": "k", "value": [1]}],
        },
        "value",
    ),
    (
        "underride",
        "u",
        {"actions": [], "conditions": [{"kind": "event_property_is", "key": "k", "value": 1.5}]},
        "value",
    ),
]


@pytest.mark.parametrize(("kind", "rule_id", "body", "fragment"), INVALID)
def test_invalid_rules(kind: str, rule_id: str, body: dict[str, object], fragment: str) -> None:
    with pytest.raises(PushRuleError) as info:
        validate_rule(kind, rule_id, body)
    assert fragment in str(info.value)
    assert info.value.errcode == "M_INVALID_PARAM"
    assert isinstance(info.value, ValueError)


def test_validate_actions_keeps_legacy() -> None:
    # Accepted and kept as written (Synapse echoes them); evaluation ignores them.
    assert validate_actions(["dont_notify"]) == ["dont_notify"]
    assert validate_actions(["notify", "coalesce"]) == ["notify", "coalesce"]


PLACEMENT = [
    # (order, rule, before, after, new order)
    ([], "a", None, None, ["a"]),
    (["b", "c"], "a", None, None, ["a", "b", "c"]),  # new: most important
    (["b", "a", "c"], "a", None, None, ["b", "a", "c"]),  # update: keeps its place
    (["b", "c"], "a", "c", None, ["b", "a", "c"]),
    (["b", "c"], "a", "b", None, ["a", "b", "c"]),
    (["b", "c"], "a", None, "b", ["b", "a", "c"]),
    (["b", "c"], "a", None, "c", ["b", "c", "a"]),
    (["a", "b", "c"], "a", None, "c", ["b", "c", "a"]),  # move an existing rule
    (["b", "c", "a"], "a", "b", None, ["a", "b", "c"]),
    (["b", "c"], "a", "c", "b", ["b", "a", "c"]),  # both: before wins
    (["b", "c"], "a", "b", "c", ["a", "b", "c"]),
]


@pytest.mark.parametrize(("order", "rule_id", "before", "after", "expected"), PLACEMENT)
def test_place_rule(
    order: list[str], rule_id: str, before: str | None, after: str | None, expected: list[str]
) -> None:
    assert place_rule(order, rule_id, before=before, after=after) == expected


@pytest.mark.parametrize(
    ("order", "rule_id", "before", "after"),
    [
        (["b"], "a", "zz", None),  # not found
        (["b"], "a", None, "zz"),
        (["a", "b"], "a", "a", None),  # relative to itself
        (["b"], "a", ".m.rule.master", None),  # relative to a server-default rule
        (["b"], "a", None, ".m.rule.message"),
    ],
)
def test_place_rule_errors(
    order: list[str], rule_id: str, before: str | None, after: str | None
) -> None:
    with pytest.raises(PushRuleError) as info:
        place_rule(order, rule_id, before=before, after=after)
    assert info.value.errcode == "M_UNKNOWN"
