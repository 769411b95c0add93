"""Push rule changes in storage (storage/push_rules.py): only changes, never the defaults."""

from __future__ import annotations

import pytest

from pocketserver.core.push_rules import RULE_KINDS, PushRuleError
from pocketserver.storage import push_rules as store
from tests.push.conftest import Db

ALICE = "@alice:test.local"


def _rule(rule_id: str, actions: list[object] | None = None) -> dict[str, object]:
    return {"rule_id": rule_id, "pattern": rule_id, "actions": actions or []}


def _order(db: Db) -> list[str]:
    changes = db.read_sync(store.load_changes, ALICE)
    return [str(r["rule_id"]) for r in changes.user_rules["content"]]


def test_a_user_without_changes_has_no_rows(db: Db) -> None:
    changes = db.read_sync(store.load_changes, ALICE)
    assert changes.user_rules == {k: [] for k in RULE_KINDS}
    assert changes.enabled == {}
    assert changes.actions == {}
    assert db.read_sync(store.changed_position, ALICE) is None


def test_put_places_and_keeps_enabled(db: Db) -> None:
    db.write_sync(store.put_rule, ALICE, "content", _rule("a"), 5)
    db.write_sync(store.put_rule, ALICE, "content", _rule("b"), 6)
    db.write_sync(lambda c: store.put_rule(c, ALICE, "content", _rule("c"), 7, after="b"))
    assert _order(db) == ["b", "c", "a"]
    assert db.write_sync(store.set_enabled, ALICE, "content", "c", False, 8)
    db.write_sync(store.put_rule, ALICE, "content", _rule("c", ["notify"]), 9)
    changes = db.read_sync(store.load_changes, ALICE)
    c_rule = changes.user_rules["content"][1]
    assert c_rule == {"rule_id": "c", "pattern": "c", "actions": ["notify"], "enabled": False}
    assert db.read_sync(store.changed_position, ALICE) == 9


def test_bad_anchor_changes_nothing(db: Db) -> None:
    db.write_sync(store.put_rule, ALICE, "content", _rule("a"), 1)
    with pytest.raises(PushRuleError) as exc:
        db.write_sync(lambda c: store.put_rule(c, ALICE, "content", _rule("x"), 2, before="nope"))
    assert exc.value.errcode == "M_UNKNOWN"
    assert _order(db) == ["a"]
    assert db.read_sync(store.changed_position, ALICE) == 1


def test_default_rule_changes_are_stored_as_changes(db: Db) -> None:
    key = ("override", ".m.rule.master")
    assert db.write_sync(store.set_enabled, ALICE, *key, True, 3)
    assert db.write_sync(store.set_actions, ALICE, "underride", ".m.rule.message", [], 4)
    changes = db.read_sync(store.load_changes, ALICE)
    assert changes.enabled == {key: True}
    assert changes.actions == {("underride", ".m.rule.message"): []}
    rows = db.read_sync(lambda c: c.execute("SELECT count(*) FROM push_rules").fetchone()[0])
    assert rows == 0


def test_missing_user_rules_report_false(db: Db) -> None:
    assert not db.write_sync(store.set_enabled, ALICE, "content", "x", True, 1)
    assert not db.write_sync(store.set_actions, ALICE, "content", "x", [], 1)
    assert not db.write_sync(store.delete_rule, ALICE, "content", "x", 1)
    assert db.read_sync(store.changed_position, ALICE) is None


def test_rules_per_user_are_bounded(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "MAX_RULES_PER_USER", 3)
    for name in ("a", "b", "c"):
        db.write_sync(store.put_rule, ALICE, "content", _rule(name), 1)
    with pytest.raises(PushRuleError):
        db.write_sync(store.put_rule, ALICE, "content", _rule("d"), 1)
    db.write_sync(store.put_rule, ALICE, "content", _rule("a", ["notify"]), 1)  # update: fine
    assert _order(db) == ["c", "b", "a"]
