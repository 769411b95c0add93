"""Membership changes inside one sync window, through the real server: a leave and
rejoin comes as a room sent from scratch, a join and leave carries the room's state,
and a user always sees their own leave (as Synapse does)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.clients import User, close_all
from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("windows"), rc_message={"per_second": 1000, "burst_count": 1000}
    )
    with running_server(config) as s:
        yield s
        close_all()
    assert "Traceback" not in s.log_text(), s.log_text()


def _state(section: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["type"], e["state_key"]): e for e in section["state"]["events"]}


def _known(section: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The state a client knows from the section: ``state``, then the timeline's."""
    known = _state(section)
    for e in section["timeline"]["events"]:
        if "state_key" in e:
            known[(e["type"], e["state_key"])] = e
    return known


def _put_state(user: User, room: str, etype: str, content: dict[str, Any]) -> None:
    r = user.http.put(f"{V3}/rooms/{room}/state/{etype}/", json=content)
    assert r.status_code == 200, r.text


def test_leave_and_rejoin_in_one_window_sends_the_room_from_scratch(server: RunningServer) -> None:
    alice, bob = User(server, "rjalice"), User(server, "rjbob")
    room = alice.create(preset="public_chat", name="before")
    bob.join(room)
    since = bob.sync(timeout=0)["next_batch"]
    assert bob.post(f"/rooms/{room}/leave").status_code == 200
    # While Bob is away: the name and topic change, and there is chatter.
    _put_state(alice, room, "m.room.name", {"name": "while away"})
    _put_state(alice, room, "m.room.topic", {"topic": "new topic"})
    for i in range(12):
        alice.text(room, f"msg {i}")
    bob.join(room)
    body = bob.sync(since=since, timeout=0)
    assert room not in body["rooms"]["leave"]
    section = body["rooms"]["join"][room]
    assert section["timeline"]["limited"] is True
    state = _state(section)
    # Full state at the start of the timeline: with the timeline, the current state.
    for key in [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.join_rules", "")]:
        assert key in _known(section)
    assert state[("m.room.name", "")]["content"]["name"] == "while away"
    assert state[("m.room.topic", "")]["content"]["topic"] == "new topic"
    assert ("m.room.member", alice.user_id) in state


def test_join_and_leave_in_one_window_carries_state(server: RunningServer) -> None:
    alice, bob = User(server, "jlalice"), User(server, "jlbob")
    room = alice.create(preset="public_chat", name="visited", topic="a topic")
    for i in range(12):  # more than a timeline holds
        alice.text(room, f"old {i}")
    since = bob.sync(timeout=0)["next_batch"]
    bob.join(room)
    alice.text(room, "hello bob")
    assert bob.post(f"/rooms/{room}/leave").status_code == 200
    body = bob.sync(since=since, timeout=0)
    section = body["rooms"]["leave"][room]
    assert section["state"]["events"], "the room's state must come with it"
    known = _known(section)
    for key in [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.join_rules", "")]:
        assert key in known
    assert known[("m.room.name", "")]["content"]["name"] == "visited"
    assert known[("m.room.topic", "")]["content"]["topic"] == "a topic"
    last = section["timeline"]["events"][-1]
    assert (last["type"], last["state_key"], last["content"]["membership"]) == (
        "m.room.member",
        bob.user_id,
        "leave",
    )


def test_own_leave_is_visible_with_joined_history(server: RunningServer) -> None:
    alice, bob = User(server, "hvalice"), User(server, "hvbob")
    room = alice.create(preset="public_chat")
    _put_state(alice, room, "m.room.history_visibility", {"history_visibility": "joined"})
    bob.join(room)
    since = bob.sync(timeout=0)["next_batch"]
    alice.text(room, "before the leave")
    assert bob.post(f"/rooms/{room}/leave").status_code == 200
    alice.text(room, "after the leave")  # never shown to Bob
    body = bob.sync(since=since, timeout=0)
    timeline = body["rooms"]["leave"][room]["timeline"]["events"]
    own = [e for e in timeline if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert [e["content"]["membership"] for e in own] == ["leave"]
    bodies = [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"]
    assert bodies == ["before the leave"]
    # The archived room in an initial sync with include_leave shows it too.
    archived = bob.sync(filter='{"room": {"include_leave": true}}', timeout=0)
    timeline = archived["rooms"]["leave"][room]["timeline"]["events"]
    assert timeline[-1]["type"] == "m.room.member"
    assert timeline[-1]["state_key"] == bob.user_id
    assert "after the leave" not in [e["content"].get("body") for e in timeline]
