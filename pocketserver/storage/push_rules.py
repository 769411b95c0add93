"""Each user's push rule changes: their own rules and changes to server-default rules.

See ``schema/009_push.sql``. Nothing here copies the server-default rules: a user
who never touched their rules has no rows at all. Functions take a connection and
never commit; the write functions are meant to run inside ``Database.write``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pocketserver.core.push_rules import RULE_KINDS, PushRuleError, RuleKey, place_rule

MAX_RULES_PER_USER = 500
"""A user's own rules are few; this bounds what one account can make every event cost."""


@dataclass(frozen=True, slots=True)
class UserRuleChanges:
    """A user's stored changes, in the shape :func:`core.push_rules.merge_rules` takes."""

    user_rules: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    enabled: dict[RuleKey, bool] = field(default_factory=dict)
    actions: dict[RuleKey, list[object]] = field(default_factory=dict)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def load_changes(conn: sqlite3.Connection, user_id: str) -> UserRuleChanges:
    """The user's own rules (by kind, most important first) and default-rule changes."""
    return load_changes_many(conn, [user_id])[user_id]


def load_changes_many(
    conn: sqlite3.Connection, user_ids: Sequence[str]
) -> dict[str, UserRuleChanges]:
    """:func:`load_changes` of several users in one go (every one gets an entry)."""
    result = {u: UserRuleChanges(user_rules={kind: [] for kind in RULE_KINDS}) for u in user_ids}
    wanted = list(result)
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT user_id, kind, rule_id, rule_json, enabled FROM push_rules"
            f" WHERE user_id IN ({marks}) ORDER BY user_id, kind, priority",
            chunk,
        )
        for user_id, kind, rule_id, rule_json, enabled in rows:
            rule = json.loads(rule_json)
            if not isinstance(rule, dict):
                continue
            rule["rule_id"] = rule_id
            rule["enabled"] = bool(enabled)
            result[str(user_id)].user_rules.setdefault(str(kind), []).append(rule)
        rows = conn.execute(
            "SELECT user_id, kind, rule_id, enabled, actions_json FROM push_rule_default_changes"
            f" WHERE user_id IN ({marks})",
            chunk,
        )
        for user_id, kind, rule_id, enabled, actions_json in rows:
            changes = result[str(user_id)]
            key = (str(kind), str(rule_id))
            if enabled is not None:
                changes.enabled[key] = bool(enabled)
            if actions_json is not None:
                actions = json.loads(actions_json)
                if isinstance(actions, list):
                    changes.actions[key] = actions
    return result


def _order(conn: sqlite3.Connection, user_id: str, kind: str) -> list[str]:
    rows = conn.execute(
        "SELECT rule_id FROM push_rules WHERE user_id = ? AND kind = ? ORDER BY priority",
        (user_id, kind),
    )
    return [str(r[0]) for r in rows]


def _mark_changed(conn: sqlite3.Connection, user_id: str, events_position: int) -> None:
    conn.execute(
        "INSERT INTO push_rules_changes (user_id, version, events_position) VALUES (?, 1, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET version = version + 1,"
        " events_position = excluded.events_position",
        (user_id, events_position),
    )


def put_rule(
    conn: sqlite3.Connection,
    user_id: str,
    kind: str,
    rule: Mapping[str, object],
    events_position: int,
    *,
    before: str | None = None,
    after: str | None = None,
) -> None:
    """Create or replace one of the user's own rules and place it (pushrules.yaml).

    A new rule is enabled; a replaced one keeps its ``enabled`` state.

    Args:
        conn: The write connection.
        user_id: The owner.
        kind: The rule kind.
        rule: What :func:`core.push_rules.validate_rule` returned.
        events_position: The room event stream position now (see the schema).
        before: Place it just before this user rule of the kind.
        after: Place it just after this user rule of the kind.

    Raises:
        PushRuleError: ``M_UNKNOWN`` for a bad ``before``/``after``; ``M_INVALID_PARAM``
            when the user has :data:`MAX_RULES_PER_USER` rules already.
    """
    rule_id = str(rule["rule_id"])
    order = _order(conn, user_id, kind)
    new_order = place_rule(order, rule_id, before=before, after=after)
    if rule_id not in order:
        total = conn.execute(
            "SELECT count(*) FROM push_rules WHERE user_id = ?", (user_id,)
        ).fetchone()[0]
        if int(total) >= MAX_RULES_PER_USER:
            raise PushRuleError(f"at most {MAX_RULES_PER_USER} push rules per user")
    stored = {k: v for k, v in rule.items() if k not in ("rule_id", "enabled", "default")}
    conn.execute(
        "INSERT INTO push_rules (user_id, kind, rule_id, priority, rule_json, enabled)"
        " VALUES (?, ?, ?, -1, ?, 1)"
        " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET rule_json = excluded.rule_json",
        (user_id, kind, rule_id, _dumps(stored)),
    )
    _renumber(conn, user_id, kind, new_order)
    _mark_changed(conn, user_id, events_position)


def _renumber(conn: sqlite3.Connection, user_id: str, kind: str, order: Sequence[str]) -> None:
    conn.executemany(
        "UPDATE push_rules SET priority = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
        [(i, user_id, kind, rule_id) for i, rule_id in enumerate(order)],
    )


def delete_rule(
    conn: sqlite3.Connection, user_id: str, kind: str, rule_id: str, events_position: int
) -> bool:
    """Delete one of the user's own rules; False if there is no such rule."""
    cur = conn.execute(
        "DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
        (user_id, kind, rule_id),
    )
    if cur.rowcount == 0:
        return False
    _mark_changed(conn, user_id, events_position)
    return True


def _change_default(
    conn: sqlite3.Connection,
    user_id: str,
    kind: str,
    rule_id: str,
    column: Literal["enabled", "actions_json"],
    value: int | str,
) -> None:
    """Record the user's change to one column of a server-default rule."""
    conn.execute(
        f"INSERT INTO push_rule_default_changes (user_id, kind, rule_id, {column})"
        f" VALUES (?, ?, ?, ?) ON CONFLICT (user_id, kind, rule_id)"
        f" DO UPDATE SET {column} = excluded.{column}",
        (user_id, kind, rule_id, value),
    )


def set_enabled(
    conn: sqlite3.Connection,
    user_id: str,
    kind: str,
    rule_id: str,
    enabled: bool,
    events_position: int,
) -> bool:
    """Enable or disable a rule (a user rule, or a server-default one by ``.`` ID).

    Returns:
        False if it is a user rule that does not exist (the caller checks defaults).
    """
    if rule_id.startswith("."):
        _change_default(conn, user_id, kind, rule_id, "enabled", int(enabled))
    else:
        cur = conn.execute(
            "UPDATE push_rules SET enabled = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
            (int(enabled), user_id, kind, rule_id),
        )
        if cur.rowcount == 0:
            return False
    _mark_changed(conn, user_id, events_position)
    return True


def set_actions(
    conn: sqlite3.Connection,
    user_id: str,
    kind: str,
    rule_id: str,
    actions: Sequence[object],
    events_position: int,
) -> bool:
    """Change a rule's actions (a user rule, or a server-default one by ``.`` ID).

    Returns:
        False if it is a user rule that does not exist (the caller checks defaults).
    """
    if rule_id.startswith("."):
        _change_default(conn, user_id, kind, rule_id, "actions_json", _dumps(list(actions)))
        _mark_changed(conn, user_id, events_position)
        return True
    row = conn.execute(
        "SELECT rule_json FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
        (user_id, kind, rule_id),
    ).fetchone()
    if row is None:
        return False
    rule = json.loads(row[0])
    rule["actions"] = list(actions)
    conn.execute(
        "UPDATE push_rules SET rule_json = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
        (_dumps(rule), user_id, kind, rule_id),
    )
    _mark_changed(conn, user_id, events_position)
    return True


def changed_position(conn: sqlite3.Connection, user_id: str) -> int | None:
    """The room event stream position at the user's last rule change (None: never)."""
    row = conn.execute(
        "SELECT events_position FROM push_rules_changes WHERE user_id = ?", (user_id,)
    ).fetchone()
    return int(row[0]) if row else None
