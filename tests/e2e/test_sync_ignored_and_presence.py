"""Through the real server: an ignored user's messages neither show nor count as
unread (client-server API "Ignoring Users", push.md), and a user who starts sharing
a room with someone gets their presence in the next incremental sync (as Synapse)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.clients import User, close_all
from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("ignored"), rc_message={"per_second": 1000, "burst_count": 1000}
    )
    with running_server(config) as s:
        yield s
        close_all()
    assert "Traceback" not in s.log_text(), s.log_text()


def _counts(body: dict[str, Any], room: str) -> dict[str, int]:
    return dict(body["rooms"]["join"][room]["unread_notifications"])


def _bodies(body: dict[str, Any], room: str) -> list[str]:
    entry = body["rooms"]["join"].get(room, {"timeline": {"events": []}})
    return [e["content"].get("body") for e in entry["timeline"]["events"] if "body" in e["content"]]


def test_ignored_sender_neither_shows_nor_counts(server: RunningServer) -> None:
    alice, bob, mallory = (User(server, f"ig{n}") for n in ("alice", "bob", "mallory"))
    room = alice.create(preset="public_chat", name="counting")
    bob.join(room)
    mallory.join(room)
    r = alice.http.put(
        f"{V3}/user/{quote(alice.user_id)}/account_data/m.ignored_user_list",
        json={"ignored_users": {mallory.user_id: {}}},
    )
    assert r.status_code == 200, r.text
    since = alice.sync(timeout=0)["next_batch"]
    mallory.text(room, "spam")
    mallory.text(room, "spam mention", **{"m.mentions": {"user_ids": [alice.user_id]}})
    bob.text(room, "a real message")
    body = alice.sync(since=since, timeout=0)
    assert _bodies(body, room) == ["a real message"]
    assert _counts(body, room) == {"notification_count": 1, "highlight_count": 0}
    # Nor does /notifications list them.
    listed = alice.ok("/notifications")["notifications"]
    assert [n["event"]["content"]["body"] for n in listed] == ["a real message"]
    # Not ignored any more: Mallory counts again.
    r = alice.http.put(
        f"{V3}/user/{quote(alice.user_id)}/account_data/m.ignored_user_list",
        json={"ignored_users": {}},
    )
    assert r.status_code == 200, r.text
    mallory.text(room, "hello", **{"m.mentions": {"user_ids": [alice.user_id]}})
    counts = _counts(alice.sync(since=body["next_batch"], timeout=0), room)
    assert counts == {"notification_count": 2, "highlight_count": 1}


def _presence_of(body: dict[str, Any]) -> dict[str, str]:
    return {e["sender"]: e["content"]["presence"] for e in body["presence"]["events"]}


def test_presence_of_a_new_room_mate_comes_both_ways(server: RunningServer) -> None:
    alice, bob = User(server, "pralice"), User(server, "prbob")
    r = bob.http.put(f"{V3}/presence/{quote(bob.user_id)}/status", json={"presence": "online"})
    assert r.status_code == 200, r.text
    room = alice.create(preset="public_chat")
    alice_since = alice.sync(timeout=0)["next_batch"]
    bob_since = bob.sync(timeout=0)["next_batch"]
    # Bob's presence changed before they shared a room: Alice has not been sent it.
    bob.join(room)
    seen_by_alice = _presence_of(alice.sync(since=alice_since, timeout=0))
    assert seen_by_alice.get(bob.user_id) == "online"
    seen_by_bob = _presence_of(bob.sync(since=bob_since, timeout=0))
    assert alice.user_id in seen_by_bob
    # A stranger sharing no room still gets nothing of Bob's.
    carol = User(server, "prcarol")
    assert bob.user_id not in _presence_of(carol.sync(timeout=0))


def test_presence_of_a_room_mate_never_seen_is_offline(server: RunningServer) -> None:
    alice, dave = User(server, "offalice"), User(server, "offdave")
    room = alice.create(preset="public_chat")
    since = alice.sync(timeout=0)["next_batch"]
    dave.join(room)  # Dave never syncs nor sets a presence
    assert _presence_of(alice.sync(since=since, timeout=0)).get(dave.user_id) == "offline"
