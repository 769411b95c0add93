"""Each user's push rules: the server defaults merged with their stored changes.

Spec: client-server-api ``modules/push.md`` "Push Rules: API" and
``data/api/client-server/pushrules.yaml``. The merged rule list of recently active
users is cached (byte-bounded, from the memory budget) because the evaluator needs
it for every member of a room on every event; a change drops the user's entry. Cached
lists are compiled for bulk evaluation and share identical rules between users (see
``push/matching.py``), so an entry costs little more than the user's own rules.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence

from pocketserver.cache import LruCache, MemoryBudget
from pocketserver.core.push_rules import (
    RULE_KINDS,
    PushRule,
    PushRuleError,
    default_push_rules,
    merge_rules,
    ruleset_to_json,
    validate_actions,
    validate_rule,
)
from pocketserver.errors import MatrixError, not_found
from pocketserver.push.matching import RuleInterner, UserRules
from pocketserver.storage import push_rules as rule_store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier


def _error(e: PushRuleError) -> MatrixError:
    return MatrixError(400, e.errcode, str(e))


def check_kind(scope: str, kind: str) -> None:
    """Reject a scope other than ``global`` or an unknown kind.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM``.
    """
    if scope != "global":
        raise MatrixError(400, "M_INVALID_PARAM", "the only push rule scope is 'global'")
    if kind not in RULE_KINDS:
        raise MatrixError(400, "M_INVALID_PARAM", f"unknown push rule kind {kind!r}")


class PushRules:
    """Reads and changes users' push rules."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        budget: MemoryBudget,
        on_change: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._notifier = notifier
        self._cache: LruCache[str, UserRules] = budget.cache(
            "push_rules", 0.01, lambda rules: rules.size
        )
        self._interner = RuleInterner()
        self._generation = 0
        self.on_change = on_change
        """Called with the user ID after each committed change (publishes m.push_rules)."""

    async def _changed(self, user_id: str) -> None:
        self._generation += 1  # a read that started before this must not be cached
        self._cache.pop(user_id)
        if self.on_change is not None:
            await self.on_change(user_id)

    async def rules_for(self, user_id: str) -> list[PushRule]:
        """The user's merged rules in evaluation order. Callers must not mutate the list."""
        return (await self.compiled_for_many([user_id]))[user_id].rules

    async def compiled_for_many(self, user_ids: Sequence[str]) -> dict[str, UserRules]:
        """The compiled rules of each user (one database read for all that aren't cached)."""
        found: dict[str, UserRules] = {}
        missing: list[str] = []
        for user_id in user_ids:
            cached = self._cache.get(user_id)
            if cached is None:
                missing.append(user_id)
            else:
                found[user_id] = cached
        if not missing:
            return found
        generation = self._generation
        loaded = await self._db.read(rule_store.load_changes_many, missing)
        for user_id, changes in loaded.items():
            rules = merge_rules(
                default_push_rules(user_id), changes.user_rules, changes.enabled, changes.actions
            )
            compiled = self._interner.compile(rules)
            if generation == self._generation:
                self._cache.set(user_id, compiled)
            found[user_id] = compiled
        return found

    async def ruleset(self, user_id: str) -> dict[str, list[dict[str, object]]]:
        """The ``global`` ruleset as ``GET /pushrules/`` shows it."""
        return ruleset_to_json(await self.rules_for(user_id))

    async def changed_position(self, user_id: str) -> int | None:
        """The room event stream position at the user's last change (None: never)."""
        return await self._db.read(rule_store.changed_position, user_id)

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> PushRule:
        """One rule by kind and ID.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND``.
        """
        for rule in await self.rules_for(user_id):
            if rule.kind == kind and rule.rule_id == rule_id:
                return rule
        raise not_found("The push rule was not found.")

    async def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        body: dict[str, object],
        *,
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        """Create or replace one of the user's own rules (``setPushRule``).

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for an invalid rule or ID (IDs
                starting with ``.`` are server-default ones), 400 ``M_UNKNOWN`` for a
                ``before``/``after`` rule that is not one of the user's rules of the kind.
        """
        try:
            rule = validate_rule(kind, rule_id, body)
            await self._db.write(
                _put_placed, user_id, kind, rule, self._notifier.position, before, after
            )
        except PushRuleError as e:
            raise _error(e) from None
        await self._changed(user_id)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        """Delete one of the user's own rules.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a server-default rule (they can be
                disabled, not deleted); 404 ``M_NOT_FOUND``.
        """
        if rule_id.startswith("."):
            await self.get_rule(user_id, kind, rule_id)  # 404 if there is no such default
            raise MatrixError(400, "M_INVALID_PARAM", "server-default push rules cannot be deleted")
        deleted = await self._db.write(
            rule_store.delete_rule, user_id, kind, rule_id, self._notifier.position
        )
        if not deleted:
            raise not_found("The push rule was not found.")
        await self._changed(user_id)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
        """Enable or disable a rule.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND``.
        """
        await self.get_rule(user_id, kind, rule_id)
        done = await self._db.write(
            rule_store.set_enabled, user_id, kind, rule_id, enabled, self._notifier.position
        )
        if not done:
            raise not_found("The push rule was not found.")
        await self._changed(user_id)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: object) -> None:
        """Change a rule's actions (server-default rules too).

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for invalid actions, 404 ``M_NOT_FOUND``.
        """
        try:
            checked = validate_actions(actions)
        except PushRuleError as e:
            raise _error(e) from None
        await self.get_rule(user_id, kind, rule_id)
        done = await self._db.write(
            rule_store.set_actions, user_id, kind, rule_id, checked, self._notifier.position
        )
        if not done:
            raise not_found("The push rule was not found.")
        await self._changed(user_id)


def _put_placed(
    conn: sqlite3.Connection,
    user_id: str,
    kind: str,
    rule: dict[str, object],
    position: int,
    before: str | None,
    after: str | None,
) -> None:
    """:func:`storage.push_rules.put_rule` with positional ``before``/``after``."""
    rule_store.put_rule(conn, user_id, kind, rule, position, before=before, after=after)
