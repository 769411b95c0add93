"""World-readable rooms through the real server: a user who is not a member may read
their state, members, messages, events and context (history_visibility.md; Synapse's
``check_user_in_room_or_world_readable``); any other room stays closed, and after a
room stops being world-readable nothing sent later leaks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.clients import User, close_all, err
from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("wr"), rc_message={"per_second": 1000, "burst_count": 1000}
    )
    with running_server(config) as s:
        yield s
        close_all()
    assert "Traceback" not in s.log_text(), s.log_text()


def _set_visibility(owner: User, room: str, value: str) -> None:
    r = owner.http.put(
        f"{V3}/rooms/{room}/state/m.room.history_visibility/",
        json={"history_visibility": value},
    )
    assert r.status_code == 200, r.text


def _reads(user: User, room: str, event_id: str) -> dict[str, Any]:
    """Status of each read endpoint for ``user``."""
    return {
        "state": user.get(f"/rooms/{room}/state").status_code,
        "state_event": user.get(f"/rooms/{room}/state/m.room.name/").status_code,
        "members": user.get(f"/rooms/{room}/members").status_code,
        "messages": user.get(f"/rooms/{room}/messages", dir="b").status_code,
        "event": user.get(f"/rooms/{room}/event/{quote(event_id)}").status_code,
        "context": user.get(f"/rooms/{room}/context/{quote(event_id)}").status_code,
    }


def test_non_member_reads_a_world_readable_room(server: RunningServer) -> None:
    owner, reader = User(server, "wrowner"), User(server, "wrreader")
    room = owner.create(preset="public_chat", name="open book")
    _set_visibility(owner, room, "world_readable")
    event_id = owner.text(room, "for everyone")
    assert set(_reads(reader, room, event_id).values()) == {200}
    state = reader.get(f"/rooms/{room}/state").json()
    assert {"m.room.create", "m.room.name"} <= {e["type"] for e in state}
    assert reader.ok(f"/rooms/{room}/state/m.room.name/") == {"name": "open book"}
    members = reader.ok(f"/rooms/{room}/members")["chunk"]
    assert [m["state_key"] for m in members] == [owner.user_id]
    chunk = reader.ok(f"/rooms/{room}/messages", dir="b")["chunk"]
    assert "for everyone" in [e["content"].get("body") for e in chunk]
    assert reader.ok(f"/rooms/{room}/event/{quote(event_id)}")["event_id"] == event_id
    assert reader.ok(f"/rooms/{room}/context/{quote(event_id)}")["event"]["event_id"] == event_id
    # Reading does not make the reader a member.
    assert room not in reader.ok("/joined_rooms")["joined_rooms"]


@pytest.mark.parametrize("visibility", ["shared", "invited", "joined"])
def test_non_member_is_refused_elsewhere(server: RunningServer, visibility: str) -> None:
    owner, outsider = User(server, f"cl{visibility}owner"), User(server, f"cl{visibility}out")
    room = owner.create(preset="public_chat", name="closed")
    _set_visibility(owner, room, visibility)
    event_id = owner.text(room, "members only")
    statuses = _reads(outsider, room, event_id)
    assert statuses.pop("event") == 404  # as for an unknown event: nothing to tell
    assert set(statuses.values()) == {403}
    assert err(outsider.get(f"/rooms/{room}/state")) == (403, "M_FORBIDDEN")


def test_nothing_sent_after_the_room_closes_leaks(server: RunningServer) -> None:
    owner, outsider = User(server, "leakowner"), User(server, "leakout")
    room = owner.create(preset="public_chat", name="open")
    _set_visibility(owner, room, "world_readable")
    early = owner.text(room, "while open")
    assert outsider.ok(f"/rooms/{room}/state/m.room.name/") == {"name": "open"}
    _set_visibility(owner, room, "shared")
    late = owner.text(room, "secret after closing")
    r = owner.http.put(f"{V3}/rooms/{room}/state/m.room.name/", json={"name": "renamed"})
    assert r.status_code == 200
    assert err(outsider.get(f"/rooms/{room}/state")) == (403, "M_FORBIDDEN")
    assert err(outsider.get(f"/rooms/{room}/state/m.room.name/")) == (403, "M_FORBIDDEN")
    assert err(outsider.get(f"/rooms/{room}/members")) == (403, "M_FORBIDDEN")
    assert err(outsider.get(f"/rooms/{room}/messages", dir="b")) == (403, "M_FORBIDDEN")
    assert outsider.get(f"/rooms/{room}/event/{quote(late)}").status_code == 404
    assert outsider.get(f"/rooms/{room}/context/{quote(late)}").status_code == 403
    # The event from the world-readable time stays readable on its own (as Synapse).
    assert outsider.ok(f"/rooms/{room}/event/{quote(early)}")["content"]["body"] == "while open"
    # The owner sees everything; the outsider's reads changed nothing.
    bodies = [
        e["content"].get("body") for e in owner.ok(f"/rooms/{room}/messages", dir="b")["chunk"]
    ]
    assert "secret after closing" in bodies
    assert room not in outsider.ok("/joined_rooms")["joined_rooms"]


def test_members_at_a_point_before_the_room_opened_is_refused(server: RunningServer) -> None:
    owner, outsider, friend = (User(server, f"at{n}") for n in ("owner", "out", "friend"))
    room = owner.create(preset="public_chat")
    friend.join(room)
    owner.text(room, "before opening")
    token = owner.sync(timeout=0)["next_batch"]
    _set_visibility(owner, room, "world_readable")
    members = outsider.ok(f"/rooms/{room}/members")["chunk"]
    assert {m["state_key"] for m in members} == {owner.user_id, friend.user_id}
    assert err(outsider.get(f"/rooms/{room}/members", at=token)) == (403, "M_FORBIDDEN")
