"""Validation of user-defined push rules, for the push rules API.

Spec: client-server-api ``data/api/client-server/pushrules.yaml`` (``PUT
/pushrules/global/{kind}/{ruleId}`` and ``.../actions``), the ``PushRule`` and
``PushCondition`` definitions, and ``modules/push.md`` "Push Rules", "Actions",
"Conditions". Errors are :class:`PushRuleError` carrying the ``errcode`` to send.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pocketserver.core.push_conditions import is_simple_value

__all__ = [
    "LEGACY_ACTIONS",
    "RULE_KINDS",
    "PushRuleError",
    "place_rule",
    "strip_legacy_actions",
    "validate_actions",
    "validate_conditions",
    "validate_rule",
    "validate_rule_id",
]

RULE_KINDS: tuple[str, ...] = ("override", "content", "room", "sender", "underride")
"""The rule kinds in the order they are checked (push.md "Push Rules")."""

LEGACY_ACTIONS = frozenset({"dont_notify", "coalesce"})
"""Historical actions that must be ignored (push.md "Historical Actions")."""

# Parameters each known condition kind requires, and the type they must have.
_CONDITION_PARAMS: Mapping[str, Mapping[str, type]] = {
    "event_match": {"key": str, "pattern": str},
    "event_property_is": {"key": str},
    "event_property_contains": {"key": str},
    "contains_display_name": {},
    "room_member_count": {"is": str},
    "sender_notification_permission": {"key": str},
}
_VALUE_KINDS = frozenset({"event_property_is", "event_property_contains"})


class PushRuleError(ValueError):
    """A push rule request is invalid.

    Attributes:
        errcode: The Matrix error code to answer with (HTTP 400):
            ``M_INVALID_PARAM`` for a bad rule, ``M_UNKNOWN`` for a ``before`` /
            ``after`` rule that does not exist (pushrules.yaml example).
    """

    def __init__(self, message: str, errcode: str = "M_INVALID_PARAM") -> None:
        super().__init__(message)
        self.errcode = errcode


def strip_legacy_actions(actions: Sequence[object]) -> list[object]:
    """Return ``actions`` without ``dont_notify`` and ``coalesce``.

    Spec: push.md "Historical Actions": they MUST be ignored, e.g. by stripping.

    Args:
        actions: An actions array.

    Returns:
        A new list without the historical actions.
    """
    return [a for a in actions if not (isinstance(a, str) and a in LEGACY_ACTIONS)]


def _check_tweak(action: Mapping[str, object]) -> None:
    tweak = action["set_tweak"]
    if not isinstance(tweak, str) or not tweak:
        raise PushRuleError("set_tweak must be a non-empty string")
    if "value" not in action:
        return
    value = action["value"]
    if tweak == "highlight" and not isinstance(value, bool):
        raise PushRuleError("the highlight tweak's value must be a boolean")
    if tweak == "sound" and not isinstance(value, str):
        raise PushRuleError("the sound tweak's value must be a string")


def validate_actions(actions: object) -> list[object]:
    """Check an actions array and return it as given.

    Spec: push.md "Actions": ``"notify"``, or an object ``{"set_tweak": name,
    "value": ...}`` (``highlight`` takes a boolean, ``sound`` a string; other tweaks
    pass through); ``dont_notify``/``coalesce`` are accepted and kept (evaluation
    ignores them, see ``PushRule.effective_actions``; Synapse stores them too).

    Args:
        actions: The ``actions`` value from a request body.

    Returns:
        The actions (a new list).

    Raises:
        PushRuleError: Not a list, or an action is not recognised.
    """
    if not isinstance(actions, list):
        raise PushRuleError("actions must be a list")
    for action in actions:
        if isinstance(action, str):
            if action != "notify" and action not in LEGACY_ACTIONS:
                raise PushRuleError(f"unrecognised action {action!r}")
        elif isinstance(action, Mapping) and "set_tweak" in action:
            _check_tweak(action)
        else:
            raise PushRuleError(f"unrecognised action {action!r}")
    return list(actions)


def _check_condition(condition: object) -> None:
    if not isinstance(condition, Mapping):
        raise PushRuleError("each condition must be an object")
    kind = condition.get("kind")
    if not isinstance(kind, str):
        raise PushRuleError("each condition needs a string 'kind'")
    for name, wanted in _CONDITION_PARAMS.get(kind, {}).items():
        if not isinstance(condition.get(name), wanted):
            raise PushRuleError(f"{kind} condition needs a string {name!r}")
    if kind in _VALUE_KINDS and not is_simple_value(condition.get("value", ...)):
        raise PushRuleError(f"{kind} condition needs a string, integer, boolean or null value")


def validate_conditions(conditions: object) -> list[dict[str, object]]:
    """Check a conditions array of an ``override`` or ``underride`` rule.

    Spec: ``PushCondition`` definition and push.md "Conditions". Known kinds must
    carry their parameters; unknown kinds are kept, since the spec says they simply
    never match.

    Args:
        conditions: The ``conditions`` value from a request body.

    Returns:
        The conditions as a list of plain dicts.

    Raises:
        PushRuleError: Not a list, or a condition is malformed.
    """
    if not isinstance(conditions, list):
        raise PushRuleError("conditions must be a list")
    for condition in conditions:
        _check_condition(condition)
    return [dict(c) for c in conditions]


def validate_rule_id(kind: str, rule_id: str) -> None:
    """Check a user rule's kind and ID.

    Spec: pushrules.yaml ``ruleId``: IDs starting with ``.`` are reserved for
    server-default rules; ``/`` and ``\\`` are not allowed.

    Args:
        kind: The rule kind from the path.
        rule_id: The rule ID from the path.

    Raises:
        PushRuleError: The kind is unknown or the ID not allowed.
    """
    if kind not in RULE_KINDS:
        raise PushRuleError(f"unknown push rule kind {kind!r}")
    if not rule_id:
        raise PushRuleError("rule ID must not be empty")
    if rule_id.startswith("."):
        raise PushRuleError("rule IDs starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise PushRuleError("rule IDs must not contain '/' or '\\'")
    # push.md: a room rule's ID is the room ID it applies to, a sender rule's the user
    # ID. Other IDs are accepted, as Synapse does (SyTest adds a room rule named by an
    # alias): such a rule never matches, which is what its ID says.


def validate_rule(kind: str, rule_id: str, body: Mapping[str, object]) -> dict[str, object]:
    """Check a ``PUT /pushrules/global/{kind}/{ruleId}`` request.

    Spec: pushrules.yaml ``setPushRule``: ``actions`` is required; ``pattern`` is
    for ``content`` rules (required there, as a content rule has no other
    condition); ``conditions`` is for ``override``/``underride`` and optional
    ("A rule with no conditions always matches", push.md "Conditions").

    Args:
        kind: The rule kind.
        rule_id: The rule ID.
        body: The decoded request body.

    Returns:
        The rule to store: ``rule_id``, ``actions`` and, by kind, ``conditions`` or
        ``pattern``. New rules are enabled (the API layer stores that).

    Raises:
        PushRuleError: Anything is invalid.
    """
    validate_rule_id(kind, rule_id)
    if "actions" not in body:
        raise PushRuleError("missing 'actions'")
    rule: dict[str, object] = {"rule_id": rule_id, "actions": validate_actions(body["actions"])}
    if kind == "content":
        pattern = body.get("pattern")
        if not isinstance(pattern, str):
            raise PushRuleError("content rules need a string 'pattern'")
        rule["pattern"] = pattern
    elif kind in ("override", "underride"):
        rule["conditions"] = validate_conditions(body.get("conditions", []))
    return rule


def place_rule(
    order: Sequence[str], rule_id: str, *, before: str | None = None, after: str | None = None
) -> list[str]:
    """Position a created or updated user rule among the user rules of its kind.

    Spec: pushrules.yaml ``setPushRule``: with ``before`` the rule becomes the next
    most important rule relative to that one (``before`` wins if both are given);
    with ``after`` the next less important; with neither, a new rule becomes the
    most important user rule and an existing one keeps its place. Rules cannot be
    placed relative to server-default rules.

    Args:
        order: The kind's user rule IDs, most important first.
        rule_id: The rule being put.
        before: ``before`` query parameter, if any.
        after: ``after`` query parameter, if any.

    Returns:
        The new order of rule IDs.

    Raises:
        PushRuleError: (``M_UNKNOWN``) the anchor is a server-default rule, the rule
            itself, or not found.
    """
    anchor = before if before is not None else after
    if anchor is None:
        return list(order) if rule_id in order else [rule_id, *order]
    if anchor.startswith("."):
        raise PushRuleError("cannot place a rule relative to a server-default rule", "M_UNKNOWN")
    rest = [r for r in order if r != rule_id]
    if anchor == rule_id or anchor not in rest:
        raise PushRuleError(f"before/after rule not found: {anchor}", "M_UNKNOWN")
    index = rest.index(anchor) + (0 if before is not None else 1)
    return [*rest[:index], rule_id, *rest[index:]]
