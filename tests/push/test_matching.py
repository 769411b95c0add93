"""Bulk evaluation (push/matching.py) gives what core.push_rules.evaluate gives, user by user."""

from __future__ import annotations

import itertools

from pocketserver.core.push_rules import (
    PushContext,
    default_push_rules,
    evaluate,
    has_highlight,
    is_notifying,
    merge_rules,
)
from pocketserver.push.matching import RuleInterner, first_match

ROOM = "!room:test.local"
SENDER = "@sender:test.local"

_USER_RULES: list[dict[str, list[dict[str, object]]]] = [
    {},
    {
        "override": [
            {
                "rule_id": "name",
                "conditions": [{"kind": "contains_display_name"}],
                "actions": ["notify", {"set_tweak": "highlight"}],
            }
        ]
    },
    {"room": [{"rule_id": ROOM, "actions": []}]},
    {"sender": [{"rule_id": SENDER, "actions": ["notify", {"set_tweak": "sound", "value": "x"}]}]},
    {"content": [{"rule_id": "cake", "pattern": "cake*", "actions": ["notify"]}]},
    # The pattern of @u0's legacy .m.rule.contains_user_name, which m.mentions turns off
    # (for @u0) while this rule stays on: the two must not share a remembered result.
    {"content": [{"rule_id": "u0", "pattern": "u0", "actions": ["notify", {"set_tweak": "x"}]}]},
    {
        "underride": [
            {
                "rule_id": "big",
                "conditions": [
                    {"kind": "room_member_count", "is": ">3"},
                    {"kind": "event_match", "key": "content.body", "pattern": "*lunch*"},
                ],
                "actions": ["notify"],
            },
            {
                "rule_id": "garbage",
                "conditions": [{"kind": "event_match", "key": 5}, "nonsense"],
                "actions": ["notify"],
            },
        ]
    },
]
_ENABLED: list[dict[tuple[str, str], bool]] = [
    {},
    {("underride", ".m.rule.message"): False},
    {("override", ".m.rule.master"): True},
]
_EVENTS: list[dict[str, object]] = [
    {"type": "m.room.message", "content": {"msgtype": "m.text", "body": "hello Bob"}},
    {"type": "m.room.message", "content": {"msgtype": "m.notice", "body": "beep"}},
    {"type": "m.room.message", "content": {"body": "cakes for lunch, Carol?"}},
    {
        "type": "m.room.message",
        "content": {"body": "hi", "m.mentions": {"user_ids": ["@u2:test.local"]}},
    },
    {"type": "m.room.message", "content": {"body": "all", "m.mentions": {"room": True}}},
    {
        "type": "m.room.member",
        "state_key": "@u3:test.local",
        "content": {"membership": "invite", "displayname": "Three"},
    },
    {"type": "m.room.encrypted", "content": {"ciphertext": "..."}},
    {"type": "m.reaction", "content": {"m.relates_to": {"rel_type": "m.annotation"}}},
    {"type": "m.room.tombstone", "state_key": "", "content": {"body": "moved"}},
    {"type": "m.call.invite", "content": {}},
    # The legacy body-mention rules, and the same bodies with m.mentions (which skips them).
    {"type": "m.room.message", "content": {"body": "hey u0, u1 and Bob"}},
    {"type": "m.room.message", "content": {"body": "hey u0, u1 and Bob", "m.mentions": {}}},
    {"type": "m.room.message", "content": {"body": "@room lunch"}},
    {"type": "m.room.message", "content": {"body": "@room lunch", "m.mentions": {}}},
]
_NAMES = [None, "Bob", "Carol", "bob", ""]


def _users() -> list[tuple[str, str | None, list[object]]]:
    users = []
    combos = itertools.product(_USER_RULES, _ENABLED, _NAMES)
    for n, (user_rules, enabled, name) in enumerate(combos):
        user_id = f"@u{n}:test.local"
        rules = merge_rules(default_push_rules(user_id), user_rules, enabled, {})
        users.append((user_id, name, rules))
    return users


def test_bulk_evaluation_matches_core_evaluate() -> None:
    interner = RuleInterner()
    users = _users()
    compiled = {user_id: interner.compile(rules) for user_id, _, rules in users}  # type: ignore[arg-type]
    for members, level, base in itertools.product((2, 5), (0, 100), _EVENTS):
        event = {**base, "sender": SENDER, "room_id": ROOM}
        memo: dict[object, bool] = {}
        for user_id, name, rules in users:
            context = PushContext(
                user_id=user_id,
                user_display_name=name,
                room_member_count=members,
                sender_power_level=level,
                notification_power_levels={"room": 50},
            )
            expected = evaluate(rules, event, context)  # type: ignore[arg-type]
            matched = first_match(compiled[user_id], event, lambda c=context: c, name, memo)
            got = None if matched is None else list(matched.rule.actions)
            assert got == expected, (user_id, name, event)
            if matched is not None:
                assert matched.notify == is_notifying(expected)
                assert matched.highlight == has_highlight(expected)


def test_interner_shares_equal_rules_and_stays_bounded() -> None:
    interner = RuleInterner(max_entries=40)
    a = interner.compile(merge_rules(default_push_rules("@a:test.local"), {}))
    b = interner.compile(merge_rules(default_push_rules("@b:test.local"), {}))
    shared = [x for x, y in zip(a.rules, b.rules, strict=True) if x is y]
    # Only the rules naming the user differ (.m.rule.invite_for_me, .m.rule.is_user_mention,
    # .m.rule.contains_user_name).
    assert len(shared) == len(a.rules) - 3
    assert b.size < a.size
    for n in range(100):
        interner.compile(merge_rules(default_push_rules(f"@u{n}:test.local"), {}))
        assert len(interner) <= 40
    # What a user's list says never depends on what was shared.
    c = interner.compile(merge_rules(default_push_rules("@c:test.local"), {}))
    assert [r.to_json() for r in c.rules] == [
        r.to_json() for r in merge_rules(default_push_rules("@c:test.local"), {})
    ]
