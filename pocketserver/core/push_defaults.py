"""The server-default push rules of Matrix v1.19, plus the legacy body-mention rules.

Spec: client-server-api ``modules/push.md`` "Predefined Rules" ("Default Override
Rules", "Default Underride Rules"), in the order and with the conditions and
actions given there.

Since v1.17 the legacy body-mention rules (``.m.rule.contains_display_name``,
``.m.rule.roomnotif`` and the content rule ``.m.rule.contains_user_name``) are no
longer among the predefined rules (MSC4210). We still offer them, as the extra
server-default rules push.md allows ("Homeservers can specify server-default
rules"), in the places and forms v1.16 defined them: Synapse 1.163 does by default
(its MSC4210 switch is off), so users of clients and bridges that mention people by
name in ``body`` without ``m.mentions`` are still notified, and clients' "my display
name"/"my username" notification settings find their rules. As v1.7-v1.16 asked
(and Synapse does), they never match an event whose content has ``m.mentions``
(:func:`skips_legacy_rule`): those events are handled by ``.m.rule.is_user_mention``
and ``.m.rule.is_room_mention``.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["LEGACY_MENTION_RULES", "default_push_rules", "skips_legacy_rule"]

LEGACY_MENTION_RULES = frozenset(
    {
        ("override", ".m.rule.contains_display_name"),
        ("override", ".m.rule.roomnotif"),
        ("content", ".m.rule.contains_user_name"),
    }
)
"""``(kind, rule_id)`` of the legacy body-mention rules (see the module docstring)."""

_SOUND_DEFAULT: dict[str, object] = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT: dict[str, object] = {"set_tweak": "highlight"}


def _match(key: str, pattern: str) -> dict[str, object]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _rule(
    rule_id: str,
    conditions: list[dict[str, object]],
    actions: list[object],
    *,
    enabled: bool = True,
) -> dict[str, object]:
    return {
        "rule_id": rule_id,
        "default": True,
        "enabled": enabled,
        "conditions": conditions,
        "actions": actions,
    }


def _override_head(user_id: str) -> list[dict[str, object]]:
    """``.m.rule.master`` to ``.m.rule.member_event``."""
    return [
        _rule(".m.rule.master", [], [], enabled=False),
        _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
        _rule(
            ".m.rule.invite_for_me",
            [
                _match("type", "m.room.member"),
                _match("content.membership", "invite"),
                _match("state_key", user_id),
            ],
            ["notify", dict(_SOUND_DEFAULT)],
        ),
        _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
    ]


def _override_mentions(user_id: str) -> list[dict[str, object]]:
    """``.m.rule.is_user_mention`` and ``.m.rule.is_room_mention`` (added in v1.7), each
    followed by its legacy counterpart (v1.16's ``.m.rule.contains_display_name`` and
    ``.m.rule.roomnotif``)."""
    user_mentioned: dict[str, object] = {
        "kind": "event_property_contains",
        "key": "content.m\\.mentions.user_ids",
        "value": user_id,
    }
    room_mentioned: dict[str, object] = {
        "kind": "event_property_is",
        "key": "content.m\\.mentions.room",
        "value": True,
    }
    return [
        _rule(
            ".m.rule.is_user_mention",
            [user_mentioned],
            ["notify", dict(_SOUND_DEFAULT), dict(_HIGHLIGHT)],
        ),
        _rule(
            ".m.rule.contains_display_name",
            [{"kind": "contains_display_name"}],
            ["notify", dict(_SOUND_DEFAULT), dict(_HIGHLIGHT)],
        ),
        _rule(
            ".m.rule.is_room_mention",
            [room_mentioned, {"kind": "sender_notification_permission", "key": "room"}],
            ["notify", dict(_HIGHLIGHT)],
        ),
        _rule(
            ".m.rule.roomnotif",
            [
                _match("content.body", "@room"),
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            ["notify", dict(_HIGHLIGHT)],
        ),
    ]


def _content_rules(user_id: str) -> list[dict[str, object]]:
    """v1.16's ``.m.rule.contains_user_name``: the user's localpart as a word of ``body``."""
    localpart = user_id[1:].split(":", 1)[0]
    rule = _rule(
        ".m.rule.contains_user_name", [], ["notify", dict(_SOUND_DEFAULT), dict(_HIGHLIGHT)]
    )
    del rule["conditions"]
    rule["pattern"] = localpart
    return [rule]


def skips_legacy_rule(kind: str, rule_id: str, event: Mapping[str, object]) -> bool:
    """Whether a legacy body-mention rule is left out for this event.

    Spec (v1.7-v1.16, push.md, the legacy rules' notes; Synapse does the same): an
    event whose ``content`` has an ``m.mentions`` property is not matched against
    ``.m.rule.contains_display_name``, ``.m.rule.contains_user_name`` or
    ``.m.rule.roomnotif``, whatever that property holds.

    Args:
        kind: The rule's kind.
        rule_id: The rule's ID.
        event: The event.

    Returns:
        True if the rule must not match the event.
    """
    if (kind, rule_id) not in LEGACY_MENTION_RULES:
        return False
    content = event.get("content")
    return isinstance(content, Mapping) and "m.mentions" in content


def _override_tail() -> list[dict[str, object]]:
    """``.m.rule.tombstone`` to ``.m.rule.suppress_edits``."""
    edit: dict[str, object] = {
        "kind": "event_property_is",
        "key": "content.m\\.relates_to.rel_type",
        "value": "m.replace",
    }
    return [
        _rule(
            ".m.rule.tombstone",
            [_match("type", "m.room.tombstone"), _match("state_key", "")],
            ["notify", dict(_HIGHLIGHT)],
        ),
        _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
        _rule(
            ".m.rule.room.server_acl",
            [_match("type", "m.room.server_acl"), _match("state_key", "")],
            [],
        ),
        _rule(".m.rule.suppress_edits", [edit], []),
    ]


def _underride_rules() -> list[dict[str, object]]:
    one_to_one: dict[str, object] = {"kind": "room_member_count", "is": "2"}
    return [
        _rule(
            ".m.rule.call",
            [_match("type", "m.call.invite")],
            ["notify", {"set_tweak": "sound", "value": "ring"}],
        ),
        _rule(
            ".m.rule.encrypted_room_one_to_one",
            [dict(one_to_one), _match("type", "m.room.encrypted")],
            ["notify", dict(_SOUND_DEFAULT)],
        ),
        _rule(
            ".m.rule.room_one_to_one",
            [dict(one_to_one), _match("type", "m.room.message")],
            ["notify", dict(_SOUND_DEFAULT)],
        ),
        _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
        _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
    ]


def default_push_rules(user_id: str) -> dict[str, list[dict[str, object]]]:
    """Return the server-default rules for a user, by kind, in priority order.

    Spec: push.md "Predefined Rules" (and v1.16's legacy body-mention rules, see the
    module docstring). Each rule is in the ``PushRule`` JSON form (``rule_id``,
    ``default: true``, ``enabled``, ``conditions`` or, for ``content``, ``pattern``,
    ``actions``); ``.m.rule.master`` is disabled, all others enabled. ``[the user's
    Matrix ID]`` in ``.m.rule.invite_for_me`` and ``.m.rule.is_user_mention`` is
    ``user_id``; the pattern of ``.m.rule.contains_user_name`` is its localpart.

    Args:
        user_id: The user the rules are for.

    Returns:
        A fresh dict with the five kinds as keys (``override``, ``content``,
        ``room``, ``sender``, ``underride``); the caller may mutate it.
    """
    return {
        "override": _override_head(user_id) + _override_mentions(user_id) + _override_tail(),
        "content": _content_rules(user_id),
        "room": [],
        "sender": [],
        "underride": _underride_rules(),
    }
