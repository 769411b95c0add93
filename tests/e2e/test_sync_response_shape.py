"""What /sync leaves in and out, through the real server, where Synapse and SyTest
(tests/31sync) set the expectation: empty rooms, heroes, the federation event format,
current state in a timeline the user could not see, and forward pagination from a
sync token."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.clients import User, close_all
from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("shape"), rc_message={"per_second": 1000, "burst_count": 1000}
    )
    with running_server(config) as s:
        yield s
        close_all()
    assert "Traceback" not in s.log_text(), s.log_text()


def test_room_with_everything_filtered_out_is_left_out(server: RunningServer) -> None:
    alice = User(server, "emptyalice")
    room = alice.create(preset="public_chat")
    flt = json.dumps(
        {
            "room": {
                "timeline": {"types": []},
                "state": {"types": ["org.example.state"]},
                "ephemeral": {"types": []},
            },
            "presence": {"types": []},
        }
    )
    since = alice.sync(filter=flt, timeout=0)["next_batch"]
    alice.text(room, "filtered out")
    body = alice.sync(filter=flt, since=since, timeout=0)
    assert body["rooms"]["join"] == {}
    # Without the filter the message comes, with its counts.
    plain = alice.sync(since=since, timeout=0)
    assert room in plain["rooms"]["join"]


def test_heroes_only_for_rooms_without_a_name(server: RunningServer) -> None:
    alice, bob = User(server, "heroalice"), User(server, "herobob")
    named = alice.create(preset="public_chat", name="Named")
    unnamed = alice.create(preset="public_chat")
    for room in (named, unnamed):
        bob.join(room)
    join = alice.sync(timeout=0)["rooms"]["join"]
    assert join[named]["summary"] == {"m.joined_member_count": 2, "m.invited_member_count": 0}
    assert join[unnamed]["summary"]["m.heroes"] == [bob.user_id]


def test_public_chat_sends_no_guest_access_event(server: RunningServer) -> None:
    alice = User(server, "guestalice")
    public = alice.create(preset="public_chat")
    private = alice.create(preset="private_chat")
    types = {
        r: {e["type"] for e in alice.get(f"/rooms/{r}/state").json()} for r in (public, private)
    }
    assert "m.room.guest_access" not in types[public]  # absent means forbidden
    assert "m.room.guest_access" in types[private]


def test_federation_event_format(server: RunningServer) -> None:
    alice = User(server, "fedalice")
    room = alice.create(preset="public_chat")
    event_id = alice.text(room, "as a PDU")
    flt = json.dumps({"event_format": "federation", "room": {"timeline": {"limit": 1}}})
    section = alice.sync(filter=flt, timeout=0)["rooms"]["join"][room]
    [event] = section["timeline"]["events"]
    for key in ("event_id", "room_id", "prev_events", "auth_events", "depth", "hashes"):
        assert key in event, key
    assert event["event_id"] == event_id
    assert event["content"]["body"] == "as a PDU"
    assert event["unsigned"]["transaction_id"]  # the sender's own device
    assert all("room_id" in e for e in section["state"]["events"])
    client = alice.sync(timeout=0)["rooms"]["join"][room]["timeline"]["events"][-1]
    assert "hashes" not in client
    assert "room_id" not in client


def test_current_state_hidden_by_history_still_in_timeline(server: RunningServer) -> None:
    creator, syncer, invitee = (User(server, f"cs{n}") for n in ("creator", "syncer", "invitee"))
    room = creator.create(preset="public_chat")
    syncer.join(room)
    r = creator.http.put(
        f"{V3}/rooms/{room}/state/m.room.history_visibility/",
        json={"history_visibility": "joined"},
    )
    assert r.status_code == 200
    assert creator.post(f"/rooms/{room}/invite", {"user_id": invitee.user_id}).status_code == 200
    since = syncer.sync(timeout=0)["next_batch"]
    assert syncer.post(f"/rooms/{room}/leave").status_code == 200
    invitee.join(room)
    for i in range(30):
        creator.text(room, f"while away {i}")
    syncer.join(room)
    section = syncer.sync(since=since, timeout=0)["rooms"]["join"][room]
    events = section["timeline"]["events"]
    # The messages sent while away stay hidden; the invitee's join (current state) shows.
    assert not [e for e in events if e["type"] == "m.room.message"]
    assert any(
        e["type"] == "m.room.member"
        and e["state_key"] == invitee.user_id
        and e["content"]["membership"] == "join"
        for e in events
    )


def test_forward_pagination_from_next_batch_has_an_end(server: RunningServer) -> None:
    alice = User(server, "fwdalice")
    room = alice.create(preset="public_chat")
    alice.text(room, "1")
    next_batch = alice.sync(timeout=0, filter=json.dumps({"room": {"timeline": {"limit": 1}}}))[
        "next_batch"
    ]
    second = alice.text(room, "2")
    page: dict[str, Any] = alice.ok(f"/rooms/{room}/messages", dir="f", **{"from": next_batch})
    assert [e["event_id"] for e in page["chunk"]] == [second]
    assert "end" in page
    after = alice.ok(f"/rooms/{room}/messages", dir="f", **{"from": page["end"]})
    assert after["chunk"] == []
    assert "end" not in after


def test_backward_page_reaching_the_start_still_has_an_end(server: RunningServer) -> None:
    alice = User(server, "backalice")
    room = alice.create(preset="public_chat")
    alice.text(room, "only message")
    page = alice.ok(f"/rooms/{room}/messages", dir="b", limit=100)
    assert page["chunk"][-1]["type"] == "m.room.create"
    assert "end" in page  # as Synapse: only the empty page after it has none
    last = alice.ok(f"/rooms/{room}/messages", dir="b", **{"from": page["end"]})
    assert last["chunk"] == []
    assert "end" not in last


def test_long_poll_is_not_ended_by_a_filtered_out_event(server: RunningServer) -> None:
    alice = User(server, "pollalice")
    room = alice.create(preset="public_chat")
    flt = json.dumps({"room": {"timeline": {"types": ["m.room.message"]}}})
    since = alice.sync(filter=flt, timeout=0)["next_batch"]
    answers: list[dict[str, Any]] = []

    def poll() -> None:
        answers.append(alice.sync(filter=flt, since=since, timeout=10_000))

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    alice.send(room, {"n": 1}, etype="org.example.filtered")
    time.sleep(0.5)
    assert not answers, "a filtered-out event ended the long-poll with an empty answer"
    alice.text(room, "wanted")
    thread.join(15)
    [body] = answers
    events = body["rooms"]["join"][room]["timeline"]["events"]
    assert [e["content"]["body"] for e in events] == ["wanted"]
