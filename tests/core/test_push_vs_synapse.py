"""Differential test: our push rule evaluation against Synapse's Rust evaluator.

Synapse is imported, never copied: ``synapse.synapse_rust.push.PushRuleEvaluator``
runs its base rules (with MSC4210 off, its default, so with the legacy body-mention
rules that v1.17 removed from the spec's list and that both servers keep, and its
non-spec ``.im.vector.jitsi`` rule disabled) and user rules on the same events.

Known, deliberate differences are kept out of the generated inputs:

* Word characters for ``content.body``: the spec lists ASCII ``[A-Za-z0-9_]``;
  Synapse uses Unicode word characters. Generated bodies are ASCII.
* ``*``/``?`` match a newline here ("any character"); Synapse's regex ``.`` does
  not. Generated text has no newlines.
* Synapse adds ``{"set_tweak": "highlight", "value": false}`` to several default
  rules and orders tweaks differently; outcomes are compared as (notify, highlight,
  sound), not as raw arrays.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocketserver.core.push_conditions import PushContext, condition_matches
from pocketserver.core.push_rules import (
    RULE_KINDS,
    default_push_rules,
    evaluate,
    has_highlight,
    is_notifying,
    merge_rules,
    tweaks_for_actions,
)

pytest.importorskip("synapse.synapse_rust.push")

with warnings.catch_warnings():  # Twisted/Synapse import-time deprecation warnings
    warnings.simplefilter("ignore")
    from synapse.push.bulk_push_rule_evaluator import _flatten_dict
    from synapse.synapse_rust.push import (
        FilteredPushRules,
        PushRule,
        PushRuleEvaluator,
        PushRules,
    )

ME = "@me:example.org"
OTHER = "@other:example.org"
ROOMS = ["!a:example.org", "!b:example.org"]
NAME = "Me Too"
PRIORITY_CLASS = {"underride": 1, "sender": 2, "room": 3, "content": 4, "override": 5}
JITSI_OFF = {"global/underride/.im.vector.jitsi": False}

# Small alphabets make glob hits likely: letters, word separators, wildcards.
TEXT = st.text(st.sampled_from(list("abAB_1 -.@!")), max_size=12)
PATTERN = st.text(st.sampled_from(list("abAB_ -.@*?")), max_size=6)
WORDS = st.sampled_from(["", "hello", "me", "Me Too", "@room", "cake", "a lie", "ME-TOO!", "time"])


def _synapse(event: dict[str, Any], ctx: PushContext) -> Any:
    content = event.get("content")
    has_mentions = isinstance(content, dict) and "m.mentions" in content
    return PushRuleEvaluator(
        _flatten_dict(event),
        has_mentions,
        ctx.room_member_count,
        ctx.sender_power_level,
        dict(ctx.notification_power_levels),
        {},  # related_events_flattened
        False,  # related_event_match_enabled
        [],  # room_version_feature_flags
        False,  # msc3931_enabled
        False,  # msc4210_enabled: off (Synapse's default), the legacy rules apply
        False,  # msc4306_enabled
    )


def _filtered(rules: list[Any]) -> Any:
    # push_rules, enabled_map, msc1767, msc3381, msc3664, msc4028, msc4075, msc4210, msc4306
    return FilteredPushRules(
        PushRules(rules), JITSI_OFF, False, False, False, False, False, False, False
    )


def _outcome(actions: Any) -> tuple[bool, bool, object]:
    actions = None if actions is None else list(actions)
    return is_notifying(actions), has_highlight(actions), tweaks_for_actions(actions).get("sound")


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event_type = draw(
        st.sampled_from(
            [
                "m.room.message",
                "m.room.encrypted",
                "m.room.member",
                "m.reaction",
                "m.room.tombstone",
                "m.room.server_acl",
                "m.call.invite",
                "m.room.topic",
                "org.example.custom",
            ]
        )
    )
    content: dict[str, Any] = {}
    if draw(st.booleans()):
        content["body"] = draw(WORDS | TEXT)
    if draw(st.booleans()):
        content["msgtype"] = draw(st.sampled_from(["m.text", "m.notice", "m.emote", 5]))
    if draw(st.booleans()):
        content["membership"] = draw(st.sampled_from(["invite", "join", "leave"]))
    if draw(st.booleans()):
        mentions: dict[str, Any] = {}
        if draw(st.booleans()):
            mentions["user_ids"] = draw(st.lists(st.sampled_from([ME, OTHER, 5, None]), max_size=3))
        if draw(st.booleans()):
            mentions["room"] = draw(st.sampled_from([True, False, "true", 1, None]))
        content["m.mentions"] = mentions
    if draw(st.booleans()):
        rel = draw(st.sampled_from(["m.replace", "m.annotation", "m.thread", None]))
        content["m.relates_to"] = {"rel_type": rel, "event_id": "$x"}
    event: dict[str, Any] = {
        "type": event_type,
        "sender": draw(st.sampled_from([OTHER, "@third:example.org"])),
        "room_id": draw(st.sampled_from(ROOMS)),
        "content": content,
    }
    state_key = draw(st.sampled_from([None, "", ME, OTHER]))
    if state_key is not None:
        event["state_key"] = state_key
    return event


@st.composite
def contexts(draw: st.DrawFn) -> PushContext:
    levels = draw(st.sampled_from([{}, {"room": 0}, {"room": 50}, {"room": 100}]))
    return PushContext(
        user_id=ME,
        user_display_name=NAME,
        room_member_count=draw(st.integers(1, 4)),
        sender_power_level=draw(st.sampled_from([0, 49, 50, 100])),
        notification_power_levels=levels,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events(), ctx=contexts())
def test_default_rules_agree_with_synapse(event: dict[str, Any], ctx: PushContext) -> None:
    ours = evaluate(merge_rules(default_push_rules(ME), {}), event, ctx)
    theirs = _synapse(event, ctx).run(_filtered([]), ME, NAME, None)
    expected = _outcome(theirs if theirs else None)
    assert _outcome(ours) == expected


CONDITIONS = st.one_of(
    st.builds(
        lambda key, pattern: {"kind": "event_match", "key": key, "pattern": pattern},
        st.sampled_from(["content.body", "content.topic", "type", "room_id"]),
        PATTERN,
    ),
    st.builds(
        lambda key, value: {"kind": "event_property_is", "key": key, "value": value},
        st.sampled_from(["content.body", "content.m\\.mentions.room", "content.n"]),
        st.sampled_from([True, False, None, 1, 0, "hello", "1"]),
    ),
    st.builds(
        lambda value: {
            "kind": "event_property_contains",
            "key": "content.m\\.mentions.user_ids",
            "value": value,
        },
        st.sampled_from([ME, OTHER, 5, None, True]),
    ),
    st.builds(
        lambda op, n: {"kind": "room_member_count", "is": f"{op}{n}"},
        st.sampled_from(["", "==", "<", ">", "<=", ">=", "=", "!"]),
        st.sampled_from(["0", "1", "2", "3", "02", "x"]),
    ),
    st.builds(
        lambda key: {"kind": "sender_notification_permission", "key": key},
        st.sampled_from(["room", "other"]),
    ),
    st.just({"kind": "contains_display_name"}),
    st.just({"kind": "org.example.unknown"}),
)


@st.composite
def condition_events(draw: st.DrawFn) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for key in ("body", "topic"):
        if draw(st.booleans()):
            content[key] = draw(WORDS | TEXT | st.sampled_from([5, None, True]))
    if draw(st.booleans()):
        content["n"] = draw(st.sampled_from([1, 0, True, None, "1"]))
    if draw(st.booleans()):
        content["m.mentions"] = {
            "room": draw(st.sampled_from([True, False, 1, None])),
            "user_ids": draw(st.lists(st.sampled_from([ME, OTHER, 5, None, True]), max_size=3)),
        }
    return {"type": "m.room.message", "room_id": ROOMS[0], "sender": OTHER, "content": content}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(condition=CONDITIONS, event=condition_events(), ctx=contexts())
def test_conditions_agree_with_synapse(
    condition: dict[str, Any], event: dict[str, Any], ctx: PushContext
) -> None:
    theirs = _synapse(event, ctx).matches(condition, ME, NAME)
    assert condition_matches(condition, event, ctx) is theirs


@st.composite
def user_rules(draw: st.DrawFn) -> dict[str, list[dict[str, Any]]]:
    actions = st.sampled_from(
        [
            [],
            ["notify"],
            ["notify", {"set_tweak": "highlight"}],
            ["notify", {"set_tweak": "sound", "value": "x"}],
        ]
    )
    rules: dict[str, list[dict[str, Any]]] = {}
    for kind in RULE_KINDS:
        ids = draw(
            st.lists(st.sampled_from([*ROOMS, OTHER, "r1", "r2", "r3"]), max_size=2, unique=True)
        )
        made = []
        for rule_id in ids:
            rule: dict[str, Any] = {"rule_id": rule_id, "actions": draw(actions)}
            rule["enabled"] = draw(st.booleans())
            if kind == "content":
                rule["pattern"] = draw(st.sampled_from(["cake", "me*", "@room", "a?lie", "*"]))
            elif kind in ("override", "underride"):
                rule["conditions"] = draw(st.lists(CONDITIONS, max_size=2))
            made.append(rule)
        rules[kind] = made
    return rules


def _synapse_rules(rules: dict[str, list[dict[str, Any]]]) -> tuple[list[Any], dict[str, bool]]:
    out, enabled = [], dict(JITSI_OFF)
    for kind, kind_rules in rules.items():
        for rule in kind_rules:
            if kind == "content":
                conditions = [
                    {"kind": "event_match", "key": "content.body", "pattern": rule["pattern"]}
                ]
            elif kind == "room":
                conditions = [{"kind": "event_match", "key": "room_id", "pattern": rule["rule_id"]}]
            elif kind == "sender":
                conditions = [{"kind": "event_match", "key": "sender", "pattern": rule["rule_id"]}]
            else:
                conditions = rule["conditions"]
            rule_id = f"global/{kind}/{rule['rule_id']}"
            enabled[rule_id] = rule["enabled"]
            out.append(
                PushRule.from_db(
                    rule_id,
                    PRIORITY_CLASS[kind],
                    json.dumps(conditions),
                    json.dumps(rule["actions"]),
                )
            )
    return out, enabled


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=user_rules(), event=events(), ctx=contexts(), master=st.booleans())
def test_user_rules_agree_with_synapse(
    rules: dict[str, list[dict[str, Any]]], event: dict[str, Any], ctx: PushContext, master: bool
) -> None:
    # Synapse orders user rules by descending priority; the stored list is ours.
    valid = {
        kind: [r for r in kind_rules if kind != "room" or r["rule_id"] in ROOMS]
        for kind, kind_rules in rules.items()
    }
    valid["sender"] = [r for r in valid["sender"] if r["rule_id"] == OTHER]
    overrides = {("override", ".m.rule.master"): master}
    ours = evaluate(merge_rules(default_push_rules(ME), valid, overrides), event, ctx)
    synapse_rules, enabled = _synapse_rules(valid)
    enabled["global/override/.m.rule.master"] = master
    filtered = FilteredPushRules(
        PushRules(synapse_rules), enabled, False, False, False, False, False, False, False
    )
    theirs = _synapse(event, ctx).run(filtered, ME, NAME, None)
    assert _outcome(ours) == _outcome(theirs if theirs else None)
