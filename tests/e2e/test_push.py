"""Push rules API, unread counts in /sync and GET /notifications, through the real server."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import nio
import pytest

from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"
_txns = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("push"), rc_message={"per_second": 1000, "burst_count": 1000}
    )
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


def _auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


@pytest.fixture
def c(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def _error(r: httpx.Response, status: int, errcode: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["errcode"] == errcode, r.text


def _rule_path(kind: str, rule_id: str, suffix: str = "") -> str:
    return f"{V3}/pushrules/global/{kind}/{quote(rule_id, safe='')}{suffix}"


def _ids(c: httpx.Client, user: dict[str, str], kind: str) -> list[str]:
    rules = c.get(f"{V3}/pushrules/", headers=_auth(user)).json()["global"][kind]
    return [r["rule_id"] for r in rules]


def _own(c: httpx.Client, user: dict[str, str], kind: str) -> list[str]:
    """The user's own rules of a kind (the server-default ones left out)."""
    return [i for i in _ids(c, user, kind) if not i.startswith(".")]


# --- the rules API -----------------------------------------------------------------------


def test_default_ruleset_shape(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    user = server.register(new_user)
    r = c.get(f"{V3}/pushrules/", headers=_auth(user))
    assert r.status_code == 200, r.text
    ruleset = r.json()["global"]
    assert set(ruleset) == {"override", "content", "room", "sender", "underride"}
    override = ruleset["override"]
    assert override[0] == {
        "rule_id": ".m.rule.master",
        "default": True,
        "enabled": False,
        "actions": [],
        "conditions": [],
    }
    ids = [r["rule_id"] for r in override]
    assert ids.index(".m.rule.invite_for_me") < ids.index(".m.rule.is_user_mention")
    mention = override[ids.index(".m.rule.is_user_mention")]
    assert mention["conditions"][0]["value"] == user["user_id"]
    underride = [r["rule_id"] for r in ruleset["underride"]]
    assert underride[-2:] == [".m.rule.message", ".m.rule.encrypted"]
    assert all(r["default"] and r["enabled"] for r in ruleset["underride"])
    # The other spellings of the same listing, and one kind's list.
    assert c.get(f"{R0}/pushrules/", headers=_auth(user)).json()["global"] == ruleset
    assert c.get(f"{V3}/pushrules/global/", headers=_auth(user)).json() == ruleset
    r = c.get(f"{V3}/pushrules/global/underride/", headers=_auth(user))
    assert r.json() == ruleset["underride"]
    # Without the trailing slash: 404 for /pushrules, 400 below it (as Synapse).
    r = c.get(f"{V3}/pushrules", headers=_auth(user))
    assert r.status_code == 404
    for path in ("/global", "/global/room", "/global/not_a_kind/", "/not_a_scope/"):
        r = c.get(f"{V3}/pushrules{path}", headers=_auth(user))
        assert r.status_code == 400, path


def test_rule_crud_with_before_and_after(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    user = server.register(new_user)
    h = _auth(user)
    for rule_id in ("a", "b"):
        r = c.put(
            _rule_path("content", rule_id), headers=h, json={"pattern": rule_id, "actions": []}
        )
        assert r.status_code == 200, r.text
        assert r.json() == {}
    assert _own(c, user, "content") == ["b", "a"]  # a new rule is the most important
    r = c.put(
        _rule_path("content", "c"),
        headers=h,
        params={"after": "b"},
        json={"pattern": "cake*lie", "actions": ["notify"]},
    )
    assert r.status_code == 200, r.text
    assert _own(c, user, "content") == ["b", "c", "a"]
    c.put(
        _rule_path("content", "d"),
        headers=h,
        params={"before": "a"},
        json={"pattern": "d", "actions": []},
    )
    assert _own(c, user, "content") == ["b", "c", "d", "a"]
    # before wins over after; an update without either keeps its place.
    c.put(
        _rule_path("content", "a"),
        headers=h,
        params={"before": "b", "after": "d"},
        json={"pattern": "a", "actions": []},
    )
    assert _own(c, user, "content") == ["a", "b", "c", "d"]
    c.put(_rule_path("content", "c"), headers=h, json={"pattern": "new", "actions": ["notify"]})
    assert _own(c, user, "content") == ["a", "b", "c", "d"]
    # The server-default content rule stays after the user's own.
    assert _ids(c, user, "content") == ["a", "b", "c", "d", ".m.rule.contains_user_name"]
    got = c.get(_rule_path("content", "c"), headers=h)
    assert got.json() == {
        "rule_id": "c",
        "default": False,
        "enabled": True,
        "actions": ["notify"],
        "pattern": "new",
    }
    # Override rules with conditions, placed among user rules only.
    cond = {"conditions": [{"kind": "event_match", "key": "content.body", "pattern": "beer"}]}
    r = c.put(_rule_path("override", "beer"), headers=h, json={**cond, "actions": ["notify"]})
    assert r.status_code == 200, r.text
    override = _ids(c, user, "override")
    assert override[:2] == [".m.rule.master", "beer"]
    # Delete.
    assert c.delete(_rule_path("content", "b"), headers=h).json() == {}
    assert _own(c, user, "content") == ["a", "c", "d"]
    _error(c.delete(_rule_path("content", "b"), headers=h), 404, "M_NOT_FOUND")
    _error(c.get(_rule_path("content", "b"), headers=h), 404, "M_NOT_FOUND")
    # Another user is unaffected.
    other = server.register(new_user + "x")
    assert _own(c, other, "content") == []


def test_rule_put_errors_change_nothing(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    user = server.register(new_user)
    h = _auth(user)
    c.put(_rule_path("content", "keep"), headers=h, json={"pattern": "x", "actions": []})
    before = c.get(f"{V3}/pushrules/", headers=h).json()
    ok = {"pattern": "x", "actions": ["notify"]}
    cases = [
        (
            c.put(_rule_path("content", "n"), headers=h, params={"before": "nope"}, json=ok),
            400,
            "M_UNKNOWN",
        ),
        (
            c.put(
                _rule_path("content", "n"), headers=h, params={"after": ".m.rule.master"}, json=ok
            ),
            400,
            "M_UNKNOWN",
        ),
        (c.put(_rule_path("content", ".mine"), headers=h, json=ok), 400, "M_INVALID_PARAM"),
        (
            c.put(_rule_path("override", ".m.rule.master"), headers=h, json={"actions": []}),
            400,
            "M_INVALID_PARAM",
        ),
        (c.put(_rule_path("content", "back\\slash"), headers=h, json=ok), 400, "M_INVALID_PARAM"),
        (
            c.put(_rule_path("content", "n"), headers=h, json={"pattern": "x"}),
            400,
            "M_MISSING_PARAM",
        ),
        (
            c.put(_rule_path("content", "n"), headers=h, json={"actions": ["notify"]}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            c.put(
                _rule_path("content", "n"), headers=h, json={"pattern": "x", "actions": "notify"}
            ),
            400,
            "M_INVALID_PARAM",
        ),
        (
            c.put(
                _rule_path("content", "n"), headers=h, json={"pattern": "x", "actions": ["boom"]}
            ),
            400,
            "M_INVALID_PARAM",
        ),
        (
            c.put(
                _rule_path("override", "n"),
                headers=h,
                json={"actions": [], "conditions": [{"kind": "event_match"}]},
            ),
            400,
            "M_INVALID_PARAM",
        ),
        (c.put(_rule_path("bogus", "n"), headers=h, json=ok), 400, "M_INVALID_PARAM"),
        (c.put(f"{V3}/pushrules/device/content/n", headers=h, json=ok), 400, "M_INVALID_PARAM"),
        (c.put(_rule_path("content", "n"), headers=h, content=b"{not json"), 400, "M_NOT_JSON"),
        (c.put(_rule_path("content", "n"), headers=h, json=[1]), 400, "M_BAD_JSON"),
        (c.put(_rule_path("content", "n"), json=ok), 401, "M_MISSING_TOKEN"),
    ]
    for response, status, errcode in cases:
        _error(response, status, errcode)
    assert c.get(f"{V3}/pushrules/", headers=h).json() == before


def test_read_and_delete_errors(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    user = server.register(new_user)
    h = _auth(user)
    _error(c.get(f"{V3}/pushrules/device/", headers=h), 400, "M_INVALID_PARAM")
    _error(c.get(f"{V3}/pushrules/device/content/x", headers=h), 400, "M_INVALID_PARAM")
    _error(c.get(_rule_path("bogus", "x"), headers=h), 400, "M_INVALID_PARAM")
    _error(c.get(_rule_path("override", ".m.rule.nope"), headers=h), 404, "M_NOT_FOUND")
    _error(c.get(_rule_path("content", ".m.rule.master"), headers=h), 404, "M_NOT_FOUND")
    _error(c.delete(_rule_path("override", ".m.rule.master"), headers=h), 400, "M_INVALID_PARAM")
    _error(c.delete(_rule_path("override", ".m.rule.nope"), headers=h), 404, "M_NOT_FOUND")
    _error(c.delete(_rule_path("bogus", "x"), headers=h), 400, "M_INVALID_PARAM")
    _error(c.get(f"{V3}/pushrules/"), 401, "M_MISSING_TOKEN")
    got = c.get(_rule_path("override", ".m.rule.master"), headers=h).json()
    assert got["rule_id"] == ".m.rule.master"
    assert got["default"] is True


def test_enabled_and_actions(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    user = server.register(new_user)
    h = _auth(user)
    master = _rule_path("override", ".m.rule.master")
    assert c.get(master + "/enabled", headers=h).json() == {"enabled": False}
    assert c.put(master + "/enabled", headers=h, json={"enabled": True}).json() == {}
    assert c.get(master + "/enabled", headers=h).json() == {"enabled": True}
    msg = _rule_path("underride", ".m.rule.message")
    assert c.get(msg + "/actions", headers=h).json() == {"actions": ["notify"]}
    highlight = ["notify", {"set_tweak": "highlight"}]
    assert c.put(msg + "/actions", headers=h, json={"actions": highlight}).json() == {}
    assert c.get(msg + "/actions", headers=h).json() == {"actions": highlight}
    # Historical actions are accepted and echoed back as Synapse does (push.md
    # "Historical Actions": evaluation ignores them; see test_muted_room_counts_nothing).
    c.put(msg + "/actions", headers=h, json={"actions": ["notify", "coalesce"]})
    assert c.get(msg + "/actions", headers=h).json() == {"actions": ["notify", "coalesce"]}
    # The listing shows the changes; only the changes are stored (other users untouched).
    override = c.get(f"{V3}/pushrules/", headers=h).json()["global"]["override"]
    assert override[0]["enabled"] is True
    other = server.register(new_user + "x")
    assert c.get(master + "/enabled", headers=_auth(other)).json() == {"enabled": False}
    # A user rule.
    c.put(_rule_path("sender", "@spam:test.local"), headers=h, json={"actions": []})
    spam = _rule_path("sender", "@spam:test.local")
    assert c.put(spam + "/enabled", headers=h, json={"enabled": False}).json() == {}
    assert c.get(spam + "/enabled", headers=h).json() == {"enabled": False}
    assert c.put(spam + "/actions", headers=h, json={"actions": ["notify"]}).json() == {}
    assert c.get(spam, headers=h).json() == {
        "rule_id": "@spam:test.local",
        "default": False,
        "enabled": False,
        "actions": ["notify"],
    }
    # Replacing a rule keeps it disabled.
    c.put(spam, headers=h, json={"actions": []})
    assert c.get(spam + "/enabled", headers=h).json() == {"enabled": False}
    # Errors.
    nope = _rule_path("sender", "@nope:test.local")
    _error(c.get(nope + "/enabled", headers=h), 404, "M_NOT_FOUND")
    _error(c.put(nope + "/enabled", headers=h, json={"enabled": True}), 404, "M_NOT_FOUND")
    _error(c.get(nope + "/actions", headers=h), 404, "M_NOT_FOUND")
    _error(c.put(nope + "/actions", headers=h, json={"actions": []}), 404, "M_NOT_FOUND")
    _error(c.put(spam + "/enabled", headers=h, json={}), 400, "M_MISSING_PARAM")
    _error(c.put(spam + "/enabled", headers=h, json={"enabled": "yes"}), 400, "M_BAD_JSON")
    _error(c.put(spam + "/actions", headers=h, json={}), 400, "M_MISSING_PARAM")
    _error(c.put(spam + "/actions", headers=h, json={"actions": [1]}), 400, "M_INVALID_PARAM")
    _error(
        c.put(f"{V3}/pushrules/x/sender/a/enabled", headers=h, json={"enabled": True}),
        400,
        "M_INVALID_PARAM",
    )
    assert c.get(spam, headers=h).json()["actions"] == []


# --- counts, /notifications ------------------------------------------------------------


def _room_pair(server: RunningServer, c: httpx.Client, name: str, display_b: str | None = None):
    a = server.register(name + "a")
    b = server.register(name + "b")
    if display_b is not None:
        c.put(
            f"{V3}/profile/{quote(b['user_id'])}/displayname",
            headers=_auth(b),
            json={"displayname": display_b},
        )
    r = c.post(
        f"{V3}/createRoom",
        headers=_auth(a),
        json={"preset": "private_chat", "invite": [b["user_id"]], "is_direct": True},
    )
    assert r.status_code == 200, r.text
    room = r.json()["room_id"]
    assert c.post(f"{V3}/rooms/{room}/join", headers=_auth(b)).status_code == 200
    return a, b, room


def _send(c: httpx.Client, user: dict[str, str], room: str, content: dict[str, object]) -> str:
    r = c.put(
        f"{V3}/rooms/{room}/send/m.room.message/t{next(_txns)}", headers=_auth(user), json=content
    )
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


def _unread(c: httpx.Client, user: dict[str, str], room: str, **params: str) -> dict[str, object]:
    body = c.get(f"{V3}/sync", headers=_auth(user), params=params).json()
    return dict(body["rooms"]["join"][room])


def test_counts_rise_highlight_and_reset(server: RunningServer, c: httpx.Client, new_user: str):
    a, b, room = _room_pair(server, c, new_user, display_b="Bobby")
    assert _unread(c, b, room)["unread_notifications"] == {
        "notification_count": 0,
        "highlight_count": 0,
    }
    _send(c, a, room, {"msgtype": "m.text", "body": "hello"})
    first = c.get(f"{V3}/sync", headers=_auth(b)).json()
    assert first["rooms"]["join"][room]["unread_notifications"] == {
        "notification_count": 1,
        "highlight_count": 0,
    }
    # A notice does not notify; an intentional mention highlights.
    _send(c, a, room, {"msgtype": "m.notice", "body": "bot"})
    mention = _send(
        c,
        a,
        room,
        {"msgtype": "m.text", "body": "Bobby: look", "m.mentions": {"user_ids": [b["user_id"]]}},
    )
    # The count changes appear in the same incremental response as the events.
    second = c.get(f"{V3}/sync", headers=_auth(b), params={"since": first["next_batch"]}).json()
    assert second["rooms"]["join"][room]["unread_notifications"] == {
        "notification_count": 2,
        "highlight_count": 1,
    }
    # The sender's own counts stay zero.
    assert _unread(c, a, room)["unread_notifications"]["notification_count"] == 0
    notes = c.get(f"{V3}/notifications", headers=_auth(b)).json()
    listed = notes["notifications"]
    assert [n["event"]["content"].get("body") for n in listed] == ["Bobby: look", "hello", None]
    # The invite notified B too (.m.rule.invite_for_me) and B's join marked it read.
    invite = listed[2]
    assert invite["event"]["type"] == "m.room.member"
    assert invite["event"]["content"]["membership"] == "invite"
    assert invite["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}]
    assert invite["read"] is True
    assert listed[0]["room_id"] == room
    assert listed[0]["read"] is False
    assert {"set_tweak": "highlight"} in listed[0]["actions"]
    assert "room_id" not in listed[0]["event"]
    assert listed[0]["event"]["event_id"] == mention
    assert isinstance(listed[0]["ts"], int)
    assert listed[0]["profile_tag"] is None  # as Synapse (SyTest 61push/09)
    assert "next_token" not in notes
    only = c.get(f"{V3}/notifications", headers=_auth(b), params={"only": "highlight"}).json()
    assert [n["event"]["event_id"] for n in only["notifications"]] == [mention]
    page = c.get(f"{V3}/notifications", headers=_auth(b), params={"limit": "1"}).json()
    assert len(page["notifications"]) == 1
    rest = c.get(
        f"{V3}/notifications", headers=_auth(b), params={"from": page["next_token"]}
    ).json()
    assert [n["event"]["content"].get("body") for n in rest["notifications"]] == ["hello", None]
    # B's read receipt on the mention resets the counts.
    r = c.post(f"{V3}/rooms/{room}/receipt/m.read/{quote(mention)}", headers=_auth(b), json={})
    assert r.status_code == 200, r.text
    third = c.get(f"{V3}/sync", headers=_auth(b), params={"since": second["next_batch"]}).json()
    assert third["rooms"]["join"][room]["unread_notifications"] == {
        "notification_count": 0,
        "highlight_count": 0,
    }
    notes = c.get(f"{V3}/notifications", headers=_auth(b)).json()["notifications"]
    assert [n["read"] for n in notes] == [True, True, True]


def test_own_message_marks_room_read(server: RunningServer, c: httpx.Client, new_user: str):
    a, b, room = _room_pair(server, c, new_user)
    _send(c, a, room, {"msgtype": "m.text", "body": "one"})
    _send(c, a, room, {"msgtype": "m.text", "body": "two"})
    assert _unread(c, b, room)["unread_notifications"]["notification_count"] == 2
    _send(c, b, room, {"msgtype": "m.text", "body": "answer"})
    assert _unread(c, b, room)["unread_notifications"]["notification_count"] == 0
    _send(c, a, room, {"msgtype": "m.text", "body": "three"})
    assert _unread(c, b, room)["unread_notifications"]["notification_count"] == 1


def test_muted_room_counts_nothing(server: RunningServer, c: httpx.Client, new_user: str):
    a, b, room = _room_pair(server, c, new_user)
    r = c.put(_rule_path("room", room), headers=_auth(b), json={"actions": ["dont_notify"]})
    assert r.status_code == 200, r.text
    assert c.get(_rule_path("room", room), headers=_auth(b)).json()["actions"] == ["dont_notify"]
    _send(c, a, room, {"msgtype": "m.text", "body": "quiet"})
    assert _unread(c, b, room)["unread_notifications"]["notification_count"] == 0
    listed = c.get(f"{V3}/notifications", headers=_auth(b)).json()["notifications"]
    assert [n["event"]["type"] for n in listed] == ["m.room.member"]  # only the invite
    # The master rule silences everything too.
    c.delete(_rule_path("room", room), headers=_auth(b))
    master = _rule_path("override", ".m.rule.master", "/enabled")
    c.put(master, headers=_auth(b), json={"enabled": True})
    _send(c, a, room, {"msgtype": "m.text", "body": "still quiet"})
    assert _unread(c, b, room)["unread_notifications"]["notification_count"] == 0
    c.put(master, headers=_auth(b), json={"enabled": False})
    _send(c, a, room, {"msgtype": "m.text", "body": "loud"})
    assert _unread(c, b, room)["unread_notifications"]["notification_count"] == 1


def test_legacy_body_mentions_notify_in_a_muted_room(
    server: RunningServer, c: httpx.Client, new_user: str
):
    # The legacy body-mention rules (kept as Synapse keeps them, core/push_defaults.py)
    # outrank a room rule; m.mentions turns them off; they can be disabled (SyTest 61push
    # "Don't get pushed for rooms you've muted").
    a, b, room = _room_pair(server, c, new_user, display_b="Bobby")
    localpart = b["user_id"][1:].split(":")[0]
    r = c.put(_rule_path("room", room), headers=_auth(b), json={"actions": ["dont_notify"]})
    assert r.status_code == 200, r.text
    _send(c, a, room, {"msgtype": "m.text", "body": "quiet"})
    _send(c, a, room, {"msgtype": "m.text", "body": f"hey {localpart}!"})
    _send(c, a, room, {"msgtype": "m.text", "body": "ask Bobby"})
    _send(c, a, room, {"msgtype": "m.text", "body": "@room lunch"})  # a is the creator
    _send(c, a, room, {"msgtype": "m.text", "body": f"hey {localpart}", "m.mentions": {}})
    off = _rule_path("content", ".m.rule.contains_user_name", "/enabled")
    assert c.put(off, headers=_auth(b), json={"enabled": False}).status_code == 200
    _send(c, a, room, {"msgtype": "m.text", "body": f"again {localpart}"})
    _send(c, a, room, {"msgtype": "m.text", "body": "last, Bobby"})
    _unread(c, b, room)  # /sync waits until its events are evaluated; /notifications not
    notes = c.get(f"{V3}/notifications", headers=_auth(b), params={"only": "highlight"}).json()
    bodies = [n["event"]["content"]["body"] for n in notes["notifications"]]
    assert bodies == ["last, Bobby", "@room lunch", "ask Bobby", f"hey {localpart}!"]
    # Another user's rules are untouched by b's change.
    got = c.get(_rule_path("content", ".m.rule.contains_user_name"), headers=_auth(a)).json()
    assert got["enabled"] is True
    assert got["pattern"] == a["user_id"][1:].split(":")[0]


def test_thread_counts_with_the_filter_flag(server: RunningServer, c: httpx.Client, new_user: str):
    a, b, room = _room_pair(server, c, new_user)
    root = _send(c, a, room, {"msgtype": "m.text", "body": "root"})
    reply = {
        "msgtype": "m.text",
        "body": "in thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    }
    _send(c, a, room, reply)
    _send(c, a, room, reply)
    # Without the flag: one total for the room.
    total = _unread(c, b, room)
    assert total["unread_notifications"]["notification_count"] == 3
    assert "unread_thread_notifications" not in total
    flt = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})
    split = _unread(c, b, room, filter=flt)
    assert split["unread_notifications"] == {"notification_count": 1, "highlight_count": 0}
    assert split["unread_thread_notifications"] == {
        root: {"notification_count": 2, "highlight_count": 0}
    }
    # B answering in the thread marks the thread read, not the main timeline.
    _send(c, b, room, {**reply, "body": "answer"})
    split = _unread(c, b, room, filter=flt)
    assert split["unread_notifications"]["notification_count"] == 1
    assert "unread_thread_notifications" not in split
    bad = json.dumps({"room": {"timeline": {"unread_thread_notifications": "yes"}}})
    r = c.get(f"{V3}/sync", headers=_auth(b), params={"filter": bad})
    _error(r, 400, "M_BAD_JSON")


def test_push_rules_in_sync_account_data(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    user = server.register(new_user)
    h = _auth(user)
    first = c.get(f"{V3}/sync", headers=h).json()
    found = [e for e in first["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert len(found) == 1
    assert found[0]["content"]["global"]["override"][0]["rule_id"] == ".m.rule.master"
    c.put(_rule_path("content", "tea"), headers=h, json={"pattern": "tea", "actions": []})
    later = c.get(
        f"{V3}/sync", headers=h, params={"since": first["next_batch"], "timeout": "5000"}
    ).json()
    found = [e for e in later["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert found, later["account_data"]
    assert [r["rule_id"] for r in found[-1]["content"]["global"]["content"]] == [
        "tea",
        ".m.rule.contains_user_name",
    ]
    again = c.get(f"{V3}/sync", headers=h).json()
    pushes = [e for e in again["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert len(pushes) == 1
    # A filter that leaves it out.
    flt = json.dumps({"account_data": {"not_types": ["m.push_rules"]}})
    quiet = c.get(f"{V3}/sync", headers=h, params={"filter": flt}).json()
    assert all(e["type"] != "m.push_rules" for e in quiet["account_data"]["events"])


def test_notifications_errors(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    user = server.register(new_user)
    h = _auth(user)
    assert c.get(f"{V3}/notifications", headers=h).json() == {"notifications": []}
    _error(c.get(f"{V3}/notifications", headers=h, params={"from": "x"}), 400, "M_INVALID_PARAM")
    _error(c.get(f"{V3}/notifications", headers=h, params={"limit": "x"}), 400, "M_INVALID_PARAM")
    _error(c.get(f"{V3}/notifications", headers=h, params={"limit": "-1"}), 400, "M_INVALID_PARAM")
    _error(c.get(f"{V3}/notifications"), 401, "M_MISSING_TOKEN")


def test_receipts_private_threaded_and_older(server: RunningServer, c: httpx.Client, new_user: str):
    a, b, room = _room_pair(server, c, new_user)
    first = _send(c, a, room, {"msgtype": "m.text", "body": "one"})
    root = _send(c, a, room, {"msgtype": "m.text", "body": "root"})
    reply = {
        "msgtype": "m.text",
        "body": "in thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    }
    in_thread = _send(c, a, room, reply)
    last = _send(c, a, room, {"msgtype": "m.text", "body": "three"})
    flt = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})

    def receipt(kind: str, event_id: str, **body: object) -> None:
        r = c.post(
            f"{V3}/rooms/{room}/receipt/{kind}/{quote(event_id)}", headers=_auth(b), json=body
        )
        assert r.status_code == 200, r.text

    split = _unread(c, b, room, filter=flt)
    assert split["unread_notifications"]["notification_count"] == 3
    assert split["unread_thread_notifications"][root]["notification_count"] == 1
    # A private receipt in the main timeline reads up to the first message only.
    receipt("m.read.private", first, thread_id="main")
    split = _unread(c, b, room, filter=flt)
    assert split["unread_notifications"]["notification_count"] == 2
    # A threaded receipt reads the thread, not the main timeline.
    receipt("m.read", in_thread, thread_id=root)
    split = _unread(c, b, room, filter=flt)
    assert split["unread_notifications"]["notification_count"] == 2
    assert "unread_thread_notifications" not in split
    # An unthreaded receipt at the last event reads everything; an older one changes nothing.
    receipt("m.read", last)
    assert _unread(c, b, room)["unread_notifications"]["notification_count"] == 0
    receipt("m.read.private", first)
    assert _unread(c, b, room)["unread_notifications"]["notification_count"] == 0


def test_long_poll_returns_the_count_with_the_event(
    server: RunningServer, c: httpx.Client, new_user: str
):
    a, b, room = _room_pair(server, c, new_user)
    since = c.get(f"{V3}/sync", headers=_auth(b)).json()["next_batch"]
    result: dict[str, object] = {}

    def poll() -> None:
        with server.client() as other:
            result["body"] = other.get(
                f"{V3}/sync", headers=_auth(b), params={"since": since, "timeout": "10000"}
            ).json()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    _send(c, a, room, {"msgtype": "m.text", "body": "wake up"})
    thread.join(15)
    body = result["body"]
    assert isinstance(body, dict)
    entry = body["rooms"]["join"][room]
    assert [e["content"]["body"] for e in entry["timeline"]["events"]] == ["wake up"]
    assert entry["unread_notifications"] == {"notification_count": 1, "highlight_count": 0}


def test_nio_sees_counts_and_push_rules(server: RunningServer, c: httpx.Client, new_user: str):
    a, b, room = _room_pair(server, c, new_user, display_b="Nio Bob")
    _send(c, a, room, {"msgtype": "m.text", "body": "hi"})
    _send(
        c,
        a,
        room,
        {"msgtype": "m.text", "body": "Nio Bob!", "m.mentions": {"user_ids": [b["user_id"]]}},
    )

    async def scenario() -> None:
        client = nio.AsyncClient(server.base_url, b["user_id"])
        try:
            login = await client.login("correct horse")
            assert isinstance(login, nio.LoginResponse), login
            rules: list[nio.PushRulesEvent] = []
            client.add_global_account_data_callback(
                lambda event: rules.append(event), nio.PushRulesEvent
            )
            synced = await client.sync(timeout=0, full_state=True)
            assert isinstance(synced, nio.SyncResponse), synced
            matrix_room = client.rooms[room]
            assert matrix_room.unread_notifications == 2
            assert matrix_room.unread_highlights == 1
            assert rules, "m.push_rules was not delivered"
            master = rules[-1].global_rules.override[0]
            assert master.id == ".m.rule.master"
            assert master.default
            set_rule = await client.set_pushrule("global", nio.PushRuleKind.room, room, actions=[])
            assert isinstance(set_rule, nio.SetPushRuleResponse), set_rule
            enabled = await client.enable_pushrule(
                "global", nio.PushRuleKind.room, room, enable=False
            )
            assert isinstance(enabled, nio.EnablePushRuleResponse), enabled
            deleted = await client.delete_pushrule("global", nio.PushRuleKind.room, room)
            assert isinstance(deleted, nio.DeletePushRuleResponse), deleted
            missing = await client.delete_pushrule("global", nio.PushRuleKind.room, room)
            assert isinstance(missing, nio.DeletePushRuleError), missing
        finally:
            await client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/", {}),
        ("PUT", "/not_a_scope/room/!r:example.org", {"actions": []}),
        ("PUT", "/global", {"actions": []}),
        ("PUT", "/global/room", {"actions": []}),
        ("PUT", "/global/room/", {"actions": []}),
        ("PUT", "/global/not_a_kind/foo", {"actions": []}),
        ("PUT", "/global/room/%23fo%5Co:example.com", {"actions": []}),
        ("PUT", "/global/content/my_id", {"actions": []}),  # no pattern
        ("PUT", "/global/room/!r:example.org", {}),  # no actions
        ("PUT", "/global/room/!r:example.org", {"actions": ["not_an_action"]}),
        ("PUT", "/global/override/.m.rule.master/not_an_attr", {"enabled": True}),
        ("PUT", "/global/override/.m.rule.master/enabled", {"enabled": "yes"}),
        ("GET", "/global/override/.m.rule.master/not_an_attr", None),
        ("DELETE", "/global/room/", None),
    ],
)
def test_malformed_rule_paths_are_400_and_change_nothing(
    server: RunningServer, c: httpx.Client, new_user: str, method: str, path: str, body: object
) -> None:
    user = server.register(f"{new_user}m")
    before = c.get(f"{V3}/pushrules/", headers=_auth(user)).json()
    r = c.request(method, f"{V3}/pushrules{path}", headers=_auth(user), json=body)
    assert r.status_code == 400, r.text
    assert r.json()["errcode"] in (
        "M_UNRECOGNIZED",
        "M_INVALID_PARAM",
        "M_BAD_JSON",
        "M_MISSING_PARAM",
    )
    assert c.get(f"{V3}/pushrules/", headers=_auth(user)).json() == before
    r = c.get(f"{V3}/pushrules/global/override/not_a_rule_id", headers=_auth(user))
    assert r.status_code == 404


def test_room_rule_named_by_alias_is_kept(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    """As Synapse (SyTest's "Can add global push rule for room"): any room rule ID."""
    user = server.register(new_user)
    r = c.put(
        f"{V3}/pushrules/global/room/%23spam:example.com",
        headers=_auth(user),
        json={"actions": ["notify"]},
    )
    assert r.status_code == 200, r.text
    rules = c.get(f"{V3}/pushrules/global/room/", headers=_auth(user)).json()
    assert [rule["rule_id"] for rule in rules] == ["#spam:example.com"]
