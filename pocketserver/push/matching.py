"""Evaluating one event for many users at once: compiled rule lists and a shared memo.

Spec: client-server-api ``modules/push.md`` "Push Rules" (the first enabled rule that
matches decides; disabled rules never match; no notifications for one's own events).

Most users have the same rules: the server defaults, which differ between users only
in the conditions that name the user (``.m.rule.invite_for_me``,
``.m.rule.is_user_mention``). So every rule gets a *match key*: two rules with the
same key match the same events. While one event is evaluated for all the members of
its room, :func:`first_match` remembers each key's result, so a condition shared by
many users' rules is checked once per event, not once per user. A rule whose
conditions read the user's display name (``contains_display_name``) is remembered
per display name; no other condition depends on the user (see
:class:`pocketserver.core.push_conditions.PushContext`: the room's member count, the
sender's level and the notification levels are the same for every user of the event).
Rules that name the user are still cheap to reject: an ``event_match``,
``event_property_is`` or ``event_property_contains`` condition never holds when its
property is missing from the event, and whether a property is there is remembered per
event too.

:class:`RuleInterner` shares identical rules between users' lists, so a cached list
costs a few references plus the rules that are the user's own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from pocketserver.cache import estimate_size
from pocketserver.core.push_conditions import lookup_property
from pocketserver.core.push_defaults import LEGACY_MENTION_RULES
from pocketserver.core.push_rules import (
    PushContext,
    PushRule,
    has_highlight,
    is_notifying,
    rule_matches,
)
from pocketserver.storage.push_counts import actions_json

MAX_SHARED_RULES = 512
"""The interner forgets everything when it holds this many rules (bounded memory)."""
_REFERENCE_BYTES = 16
_HAS = object()  # memo keys (_HAS, path): whether the event has that property


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A rule with what evaluation needs precomputed.

    Attributes:
        rule: The rule itself.
        match_key: Equal keys match the same events (for one room and sender).
        by_name: Its conditions read the user's display name: the key alone is not
            enough, the display name is part of what is remembered.
        paths: Properties the event must have for the rule to match (those of its
            ``event_match``/``event_property_is``/``event_property_contains``
            conditions: each of them fails when its property is missing).
        paths_key: The memo key of "the event has all of ``paths``" (None: no paths).
        notify: Its actions notify (:func:`core.push_rules.is_notifying`).
        highlight: Its actions highlight (:func:`core.push_rules.has_highlight`).
        actions_json: Its actions as the recent-notifications list stores them.
    """

    rule: PushRule
    match_key: object
    by_name: bool
    paths: tuple[str, ...]
    paths_key: str | None
    notify: bool
    highlight: bool
    actions_json: str


@dataclass(frozen=True, slots=True, eq=False)
class UserRules:
    """A user's merged rule list and its enabled rules, compiled, in evaluation order."""

    rules: list[PushRule]
    enabled: tuple[CompiledRule, ...]
    size: int
    """Estimated bytes this list keeps alive beyond rules shared with other lists."""


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=True)


def _match_key(rule: PushRule) -> object:
    """What decides whether ``rule`` matches (see :func:`core.push_rules.rule_matches`).

    A legacy body-mention rule also depends on ``m.mentions`` being absent, so its key
    differs from that of a user's rule with the same conditions or pattern.
    """
    if rule.default and (rule.kind, rule.rule_id) in LEGACY_MENTION_RULES:
        key = _match_key(replace(rule, default=False))
        return "l" + key if isinstance(key, str) else key
    try:
        if rule.kind in ("override", "underride"):
            return "c" + _dumps(list(rule.conditions))
        if rule.kind == "content":
            return "p" + _dumps(rule.pattern)
    except (TypeError, ValueError):
        return object()  # not JSON (never stored so): a key of its own
    if rule.kind in ("room", "sender"):
        return f"{rule.kind[0]}{rule.rule_id}"
    return object()


def _by_name(rule: PushRule) -> bool:
    return any(
        isinstance(c, Mapping) and c.get("kind") == "contains_display_name" for c in rule.conditions
    )


_NEED_PROPERTY = frozenset({"event_match", "event_property_is", "event_property_contains"})


def _required_paths(rule: PushRule) -> tuple[str, ...]:
    if rule.kind not in ("override", "underride"):
        return ()
    paths = [
        c["key"]
        for c in rule.conditions
        if isinstance(c, Mapping)
        and c.get("kind") in _NEED_PROPERTY
        and isinstance(c.get("key"), str)
    ]
    return tuple(dict.fromkeys(paths))


def _identity(rule: PushRule) -> str | None:
    """The whole rule as text (equal text, equal rule), or None if it has no JSON form."""
    try:
        return _dumps(
            [
                rule.kind,
                rule.rule_id,
                rule.default,
                rule.enabled,
                list(rule.actions),
                list(rule.conditions),
                rule.pattern,
            ]
        )
    except (TypeError, ValueError):
        return None


class RuleInterner:
    """Shares identical compiled rules between users (bounded by entry count)."""

    def __init__(self, max_entries: int = MAX_SHARED_RULES) -> None:
        self._max = max_entries
        self._shared: dict[str, CompiledRule] = {}

    def __len__(self) -> int:
        return len(self._shared)

    def compile(self, rules: list[PushRule]) -> UserRules:
        """Compile a merged rule list (the list returned shares equal rules)."""
        shared_rules: list[PushRule] = []
        enabled: list[CompiledRule] = []
        size = 200 + 2 * _REFERENCE_BYTES * len(rules)
        for rule in rules:
            identity = _identity(rule)
            compiled = self._shared.get(identity) if identity is not None else None
            if compiled is None:
                paths = _required_paths(rule)
                compiled = CompiledRule(
                    rule=rule,
                    match_key=_match_key(rule),
                    by_name=_by_name(rule),
                    paths=paths,
                    paths_key="h" + "\x00".join(paths) if paths else None,
                    notify=is_notifying(rule.effective_actions),
                    highlight=has_highlight(rule.effective_actions),
                    actions_json=actions_json(rule.effective_actions),
                )
                size += estimate_size(rule) + 200
                if identity is not None:
                    if len(self._shared) >= self._max:
                        self._shared.clear()
                    self._shared[identity] = compiled
            shared_rules.append(compiled.rule)
            if compiled.rule.enabled:
                enabled.append(compiled)
        return UserRules(rules=shared_rules, enabled=tuple(enabled), size=size)


def first_match(
    rules: UserRules,
    event: Mapping[str, object],
    context: Callable[[], PushContext],
    display_name: str | None,
    memo: dict[object, bool],
) -> CompiledRule | None:
    """The first enabled rule of ``rules`` that matches the event, or None.

    Args:
        rules: The user's compiled rules.
        event: The event.
        context: Makes the user's :class:`PushContext` (called only when a rule has
            to be checked, not remembered).
        display_name: The user's display name in the room (part of what is
            remembered for ``contains_display_name`` rules).
        memo: Results by match key (and whether the event has a property, by its
            path), shared by every user evaluated for this event, this room and this
            sender; updated.

    Returns:
        The same rule whose actions :func:`core.push_rules.evaluate` would return
        (the caller checks that the user is not the sender).
    """
    made: PushContext | None = None
    for compiled in rules.enabled:
        key = (compiled.match_key, display_name) if compiled.by_name else compiled.match_key
        hit = memo.get(key)
        if hit is None:
            has: bool | None = True
            if compiled.paths_key is not None:
                has = memo.get(compiled.paths_key)  # shared by rules naming other users
                if has is None:
                    has = memo[compiled.paths_key] = all(
                        _has(event, path, memo) for path in compiled.paths
                    )
            if has:
                if made is None:
                    made = context()
                hit = rule_matches(compiled.rule, event, made)
            else:
                hit = False
            memo[key] = hit
        if hit:
            return compiled
    return None


def _has(event: Mapping[str, object], path: str, memo: dict[object, bool]) -> bool:
    key = (_HAS, path)
    found = memo.get(key)
    if found is None:
        found = memo[key] = lookup_property(event, path)[0]
    return found
