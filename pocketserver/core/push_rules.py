"""Push rules: a user's merged rule list, evaluation, and what actions mean.

Spec: client-server-api ``modules/push.md`` "Push Rules" (kinds and their order),
"Actions", "Conditions", "Predefined Rules".

Storage keeps only a user's *changes*: their own rules (by kind, in priority
order) plus ``enabled``/``actions`` changes to server-default rules, keyed by
``(kind, rule_id)``. :func:`merge_rules` combines those with
:func:`default_push_rules` into the list :func:`evaluate` walks:
``.m.rule.master``, user ``override`` rules, the other default ``override`` rules,
then for ``content``, ``room``, ``sender`` and ``underride`` the user's rules before
the defaults ("server-default rules ... operate at a lower priority than
user-defined rules, except for the ``.m.rule.master`` rule").

This module is the public surface: it re-exports the condition, default-rule and
validation helpers of ``push_conditions``, ``push_defaults`` and ``push_validate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pocketserver.core.power_levels import InvalidPowerLevel, parse_power_level
from pocketserver.core.push_conditions import (
    DEFAULT_NOTIFICATION_LEVEL,
    PushContext,
    condition_matches,
    lookup_property,
)
from pocketserver.core.push_defaults import default_push_rules, skips_legacy_rule
from pocketserver.core.push_glob import glob_matches
from pocketserver.core.push_validate import (
    RULE_KINDS,
    PushRuleError,
    place_rule,
    strip_legacy_actions,
    validate_actions,
    validate_rule,
)

__all__ = [
    "MASTER_RULE_ID",
    "RULE_KINDS",
    "PushContext",
    "PushRule",
    "PushRuleError",
    "RuleKey",
    "default_push_rules",
    "evaluate",
    "has_highlight",
    "is_notifying",
    "merge_rules",
    "notification_power_levels",
    "place_rule",
    "rule_matches",
    "ruleset_to_json",
    "tweaks_for_actions",
    "validate_actions",
    "validate_rule",
]

MASTER_RULE_ID = ".m.rule.master"

RuleKey = tuple[str, str]
"""``(kind, rule_id)``: rule IDs are only unique within a kind."""


@dataclass(frozen=True, slots=True)
class PushRule:
    """One rule of a user's merged rule list (the ``PushRule`` definition).

    Attributes:
        kind: ``override``, ``content``, ``room``, ``sender`` or ``underride``.
        rule_id: Unique within the kind; server-default IDs start with ``.``.
        default: True for a server-default rule.
        enabled: Disabled rules never match.
        actions: The actions as the user or the defaults gave them; historical
            ``dont_notify``/``coalesce`` are kept here so a client reads back what
            it wrote (as Synapse does), and ignored by :attr:`effective_actions`.
        conditions: ``override``/``underride`` only.
        pattern: ``content`` only.
    """

    kind: str
    rule_id: str
    default: bool
    enabled: bool
    actions: tuple[object, ...]
    conditions: tuple[object, ...] = ()
    pattern: str | None = None

    @property
    def effective_actions(self) -> list[object]:
        """The actions evaluation acts on: ``actions`` without the historical ones.

        Spec: push.md "Historical Actions": clients and homeservers MUST ignore
        ``dont_notify`` and ``coalesce``, "for instance, by stripping them". We ignore
        them when evaluating but keep them in the stored rule: Synapse echoes them
        back, and clients (and SyTest's 61push/05) read back what they wrote.
        """
        return strip_legacy_actions(self.actions)

    def to_json(self) -> dict[str, object]:
        """Return the rule as the client-server API shows it (``PushRule``)."""
        out: dict[str, object] = {
            "rule_id": self.rule_id,
            "default": self.default,
            "enabled": self.enabled,
            "actions": list(self.actions),
        }
        if self.kind in ("override", "underride"):
            out["conditions"] = list(self.conditions)
        elif self.kind == "content":
            out["pattern"] = self.pattern
        return out


def _build(
    kind: str,
    data: Mapping[str, object],
    default: bool,
    enabled_overrides: Mapping[RuleKey, bool],
    actions_overrides: Mapping[RuleKey, Sequence[object]],
) -> PushRule | None:
    rule_id = data.get("rule_id")
    if not isinstance(rule_id, str) or rule_id.startswith(".") != default:
        return None  # not a usable rule of this origin (e.g. a user rule named ".x")
    key = (kind, rule_id)
    enabled = enabled_overrides.get(key, data.get("enabled", True))
    actions = actions_overrides.get(key, _as_list(data.get("actions")))
    pattern = data.get("pattern")
    return PushRule(
        kind=kind,
        rule_id=rule_id,
        default=default,
        enabled=enabled is True,
        actions=tuple(actions),
        conditions=tuple(_as_list(data.get("conditions"))),
        pattern=pattern if isinstance(pattern, str) else None,
    )


def _as_list(value: object) -> Sequence[object]:
    return value if isinstance(value, list) else []


def merge_rules(
    defaults: Mapping[str, Sequence[Mapping[str, object]]],
    user_rules: Mapping[str, Sequence[Mapping[str, object]]],
    enabled_overrides: Mapping[RuleKey, bool] | None = None,
    actions_overrides: Mapping[RuleKey, Sequence[object]] | None = None,
) -> list[PushRule]:
    """Combine server-default and user rules into evaluation order.

    Spec: push.md "Push Rules" (kinds checked override, content, room, sender,
    underride) and "Predefined Rules" (user rules outrank server-default ones, but
    ``.m.rule.master`` outranks everything).

    Args:
        defaults: :func:`default_push_rules` output (kind -> rules in order).
        user_rules: The user's own rules, kind -> rules most important first, each
            a dict like :func:`validate_rule` returns, optionally with ``enabled``.
        enabled_overrides: ``(kind, rule_id)`` -> enabled, for any rule; wins over
            a rule's own ``enabled``.
        actions_overrides: ``(kind, rule_id)`` -> actions, for any rule.

    Returns:
        The rules in the order :func:`evaluate` checks them. Rules with a non-string
        ID, user rules whose ID starts with ``.``, and default rules whose ID does not,
        are left out.
    """
    enabled_map = enabled_overrides or {}
    actions_map = actions_overrides or {}
    merged: list[PushRule] = []
    for kind in RULE_KINDS:
        mine = [_build(kind, r, False, enabled_map, actions_map) for r in user_rules.get(kind, ())]
        server = [_build(kind, r, True, enabled_map, actions_map) for r in defaults.get(kind, ())]
        first = [r for r in server if r is not None and r.rule_id == MASTER_RULE_ID]
        rest = [r for r in server if r is not None and r.rule_id != MASTER_RULE_ID]
        merged += first + [r for r in mine if r is not None] + rest
    return merged


def rule_matches(rule: PushRule, event: Mapping[str, object], context: PushContext) -> bool:
    """Whether an enabled or disabled rule's conditions hold (ignores ``enabled``).

    Spec: push.md "Push Rules": a ``content`` rule glob-matches its ``pattern``
    against ``content.body`` at word boundaries; a ``room`` rule matches events in
    the room its ID names, a ``sender`` rule events sent by the user its ID names;
    ``override``/``underride`` rules need all their conditions ("Conditions"). The
    legacy body-mention rules never match an event with ``m.mentions``
    (:func:`~pocketserver.core.push_defaults.skips_legacy_rule`).

    Args:
        rule: The rule.
        event: The event.
        context: Facts for the conditions.

    Returns:
        True if the rule applies to the event.
    """
    if rule.default and skips_legacy_rule(rule.kind, rule.rule_id, event):
        return False
    if rule.kind == "content":
        found, body = lookup_property(event, "content.body")
        if rule.pattern is None or not found or not isinstance(body, str):
            return False
        return glob_matches(rule.pattern, body, word_boundary=True)
    if rule.kind == "room":
        return event.get("room_id") == rule.rule_id
    if rule.kind == "sender":
        return event.get("sender") == rule.rule_id
    if rule.kind in ("override", "underride"):
        return all(condition_matches(c, event, context) for c in rule.conditions)
    return False


def evaluate(
    rules: Iterable[PushRule], event: Mapping[str, object], context: PushContext
) -> list[object] | None:
    """Return the actions of the first enabled rule that matches the event.

    Spec: push.md "Push Rules": "Disabled rules never match"; only the highest
    priority matching rule counts; homeservers MUST NOT notify for events the user
    sent themselves. "Historical Actions": ``dont_notify``/``coalesce`` are ignored.

    Args:
        rules: The user's rules in evaluation order (:func:`merge_rules`).
        event: The event (a JSON object; any content is tolerated).
        context: The user, room and sender facts.

    Returns:
        ``None`` if no rule matched or the user sent the event; otherwise the
        matching rule's actions (``[]`` for a rule that does nothing). Use
        :func:`is_notifying` to decide whether to notify.
    """
    if event.get("sender") == context.user_id:
        return None
    for rule in rules:
        if rule.enabled and rule_matches(rule, event, context):
            return rule.effective_actions
    return None


def tweaks_for_actions(actions: Iterable[object] | None) -> dict[str, object]:
    """Collect the ``set_tweak`` actions into a tweaks dict for the push gateway.

    Spec: push.md "Actions": a ``set_tweak`` without ``value`` sets ``true``
    (defined for ``highlight``; we apply it to every tweak); later actions win.

    Args:
        actions: An actions array, or ``None``.

    Returns:
        Tweak name -> value.
    """
    tweaks: dict[str, object] = {}
    for action in actions or ():
        if isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            tweaks[str(action["set_tweak"])] = action.get("value", True)
    return tweaks


def is_notifying(actions: Iterable[object] | None) -> bool:
    """Whether the actions generate a notification (contain ``"notify"``).

    Spec: push.md "Actions" (``notify``; historical actions are ignored).

    Args:
        actions: What :func:`evaluate` returned.

    Returns:
        True if the event should notify.
    """
    return actions is not None and any(a == "notify" for a in actions)


def has_highlight(actions: Iterable[object] | None) -> bool:
    """Whether the actions set the ``highlight`` tweak to true.

    Spec: push.md "Actions": a ``highlight`` tweak without a value is ``true``; with
    no ``highlight`` tweak at all it is ``false``. Non-boolean values count as false.

    Args:
        actions: What :func:`evaluate` returned.

    Returns:
        True if the event should be highlighted.
    """
    return tweaks_for_actions(actions).get("highlight") is True


def ruleset_to_json(rules: Iterable[PushRule]) -> dict[str, list[dict[str, object]]]:
    """Group merged rules by kind as ``GET /pushrules/`` shows the ``global`` set.

    Spec: ``push_ruleset.yaml`` (the five kinds, each a list in priority order).

    Args:
        rules: Merged rules (:func:`merge_rules`).

    Returns:
        Kind -> rules in the ``PushRule`` JSON form; every kind is present.
    """
    out: dict[str, list[dict[str, object]]] = {kind: [] for kind in RULE_KINDS}
    for rule in rules:
        out.setdefault(rule.kind, []).append(rule.to_json())
    return out


def notification_power_levels(
    power_levels: Mapping[str, object] | None, *, integer_only: bool = True
) -> dict[str, int]:
    """Read the ``notifications`` levels of ``m.room.power_levels`` content.

    Spec: ``m.room.power_levels`` schema: ``notifications`` maps a key to a level;
    ``room`` defaults to 50. Values that are not valid levels are skipped (then the
    default applies), see :mod:`pocketserver.core.power_levels` for the formats.

    Args:
        power_levels: The content, or ``None`` when the room has no such event.
        integer_only: True for room v10+ (only JSON integers are valid levels).

    Returns:
        Key -> level, always including ``room``, for :class:`PushContext`.
    """
    levels: dict[str, int] = {"room": DEFAULT_NOTIFICATION_LEVEL}
    raw = power_levels.get("notifications") if power_levels is not None else None
    if not isinstance(raw, Mapping):
        return levels
    for key, value in raw.items():
        try:
            levels[str(key)] = parse_power_level(value, integer_only=integer_only)
        except InvalidPowerLevel:
            continue
    return levels
