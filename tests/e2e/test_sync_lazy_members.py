"""Lazy-loading room members in /sync through the real server (client-server API
"Lazy-loading room members"): the member events of timeline senders come in every
sync, incremental and gappy ones too, at most once per device unless asked for
redundant ones, and again after a restart rather than never."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.clients import User, close_all
from tests.harness import RunningServer, make_config, running_server

FAST = {"rc_message": {"per_second": 1000, "burst_count": 1000}}
LAZY = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 10}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(tmp_path_factory.mktemp("lazy"), **FAST)
    with running_server(config) as s:
        yield s
        close_all()
    assert "Traceback" not in s.log_text(), s.log_text()


def _sync(user: User, flt: dict[str, Any] = LAZY, **params: Any) -> dict[str, Any]:
    return user.sync(filter=json.dumps(flt), timeout=0, **params)


def _members(body: dict[str, Any], room: str) -> dict[str, str]:
    """state_key -> membership of the member events in the room's ``state``."""
    entry = body["rooms"]["join"].get(room, {})
    return {
        e["state_key"]: e["content"]["membership"]
        for e in entry.get("state", {}).get("events", [])
        if e["type"] == "m.room.member"
    }


def _room_of_three(server: RunningServer, name: str) -> tuple[User, User, User, str]:
    alice, bob, carol = (User(server, f"{name}{who}") for who in ("alice", "bob", "carol"))
    room = alice.create(preset="public_chat", name=name)  # named: no heroes
    bob.join(room)
    carol.join(room)
    return alice, bob, carol, room


def test_incremental_sync_sends_new_senders_once(server: RunningServer) -> None:
    alice, bob, carol, room = _room_of_three(server, "inc")
    for i in range(10):
        bob.text(room, f"bob {i}")
    first = _sync(alice)
    # Initial: only the senders of the timeline (Bob) and Alice herself.
    assert _members(first, room) == {alice.user_id: "join", bob.user_id: "join"}

    carol.text(room, "carol speaks")
    second = _sync(alice, since=first["next_batch"])
    assert second["rooms"]["join"][room]["timeline"]["limited"] is False
    assert _members(second, room) == {carol.user_id: "join"}

    # Carol again, and Bob: both were sent to this device already.
    carol.text(room, "carol again")
    bob.text(room, "bob again")
    third = _sync(alice, since=second["next_batch"])
    assert _members(third, room) == {}

    # Unless the client asks for redundant members.
    bob.text(room, "bob once more")
    redundant = {"room": {"state": {"lazy_load_members": True, "include_redundant_members": True}}}
    fourth = _sync(alice, redundant, since=third["next_batch"])
    assert _members(fourth, room) == {bob.user_id: "join"}


def test_a_response_not_received_is_not_assumed_known(server: RunningServer) -> None:
    alice, bob, carol, room = _room_of_three(server, "retry")
    for i in range(10):
        bob.text(room, f"bob {i}")  # the joins are out of the first timeline
    first = _sync(alice)
    carol.text(room, "hello")
    lost = _sync(alice, since=first["next_batch"])
    assert _members(lost, room) == {carol.user_id: "join"}
    # The client never got ``lost`` and retries from the same token: sent again.
    retry = _sync(alice, since=first["next_batch"])
    assert _members(retry, room) == {carol.user_id: "join"}
    # Another device of Alice's has its own memory: it gets Carol too.
    token = server.login("retryalice").json()["access_token"]
    with server.client() as c:
        c.headers["Authorization"] = f"Bearer {token}"
        r = c.get("/_matrix/client/v3/sync", params={"filter": json.dumps(LAZY), "timeout": 0})
    assert carol.user_id in _members(r.json(), room)


def test_gappy_sync_has_gap_members_and_old_speakers(server: RunningServer) -> None:
    alice, bob, carol, room = _room_of_three(server, "gap")
    dave = User(server, "gapdave")
    small = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 3}}}
    for i in range(3):
        bob.text(room, f"bob {i}")
    first = _sync(alice, small)
    assert _members(first, room) == {alice.user_id: "join", bob.user_id: "join"}

    dave.join(room)  # a join in the gap; Dave never speaks
    for i in range(5):
        bob.text(room, f"filler {i}")
    carol.text(room, "an old member starts speaking")
    gappy = _sync(alice, small, since=first["next_batch"])
    section = gappy["rooms"]["join"][room]
    assert section["timeline"]["limited"] is True
    # Dave's join from the gap, and Carol (a sender the client has not been sent);
    # not Bob, whom this device already has.
    assert _members(gappy, room) == {dave.user_id: "join", carol.user_id: "join"}


def test_join_in_timeline_is_not_repeated_in_state(server: RunningServer) -> None:
    alice, _bob, _carol, room = _room_of_three(server, "tl")
    first = _sync(alice)
    erin = User(server, "tlerin")
    erin.join(room)
    erin.text(room, "hi, I am new")
    second = _sync(alice, since=first["next_batch"])
    timeline = second["rooms"]["join"][room]["timeline"]["events"]
    assert any(e["type"] == "m.room.member" and e["state_key"] == erin.user_id for e in timeline)
    assert _members(second, room) == {}  # her join is in the timeline already
    erin.text(room, "still me")
    assert _members(_sync(alice, since=second["next_batch"]), room) == {}


def test_after_a_restart_members_are_sent_again(tmp_path: Path) -> None:
    config = make_config(tmp_path, **FAST)
    with running_server(config) as s:
        alice, bob, carol, room = _room_of_three(s, "rs")
        for i in range(10):
            carol.text(room, f"before {i}")
        first = _sync(alice)
        assert carol.user_id in _members(first, room)
        bob.text(room, "bob")
        second = _sync(alice, since=first["next_batch"])
        assert _members(second, room) == {bob.user_id: "join"}
        token = alice.http.headers["Authorization"]
        close_all()
    with running_server(config) as s:
        with s.client() as c:
            c.headers["Authorization"] = token
            bob_token = bob.http.headers["Authorization"]
            carol_token = carol.http.headers["Authorization"]
            r = c.put(
                f"/_matrix/client/v3/rooms/{room}/send/m.room.message/after1",
                headers={"Authorization": carol_token},
                json={"msgtype": "m.text", "body": "after"},
            )
            assert r.status_code == 200, r.text
            r = c.put(
                f"/_matrix/client/v3/rooms/{room}/send/m.room.message/after2",
                headers={"Authorization": bob_token},
                json={"msgtype": "m.text", "body": "after"},
            )
            assert r.status_code == 200, r.text
            body = c.get(
                "/_matrix/client/v3/sync",
                params={"filter": json.dumps(LAZY), "since": second["next_batch"], "timeout": 0},
            ).json()
        # The new process does not know what the device was sent: it sends both.
        assert _members(body, room) == {carol.user_id: "join", bob.user_id: "join"}
        assert "Traceback" not in s.log_text()


def test_a_rejoined_room_gets_its_senders_again(server: RunningServer) -> None:
    alice, bob, _carol, room = _room_of_three(server, "rejoin")
    for i in range(10):
        bob.text(room, f"bob {i}")
    first = _sync(alice)
    assert bob.user_id in _members(first, room)
    assert alice.post(f"/rooms/{room}/leave").status_code == 200
    alice.join(room)
    bob.text(room, "welcome back")
    again = _sync(alice, since=first["next_batch"])
    # Sent from scratch: Bob's member event comes again, though this device had it.
    assert _members(again, room).get(bob.user_id) == "join"


def test_heroes_of_an_unnamed_room_come_with_their_members(server: RunningServer) -> None:
    alice, bob = User(server, "dmalice"), User(server, "dmbob")
    room = alice.create(preset="public_chat")  # no name: clients name it by its heroes
    bob.join(room)
    for i in range(12):
        alice.text(room, f"talking to myself {i}")
    body = _sync(alice)
    assert body["rooms"]["join"][room]["summary"]["m.heroes"] == [bob.user_id]
    assert _members(body, room) == {alice.user_id: "join", bob.user_id: "join"}
