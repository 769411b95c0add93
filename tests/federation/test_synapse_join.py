"""Interop with a real Synapse, the joining side: a pocketserver user joins rooms that
live on Synapse.

Synapse runs on 127.0.0.1, pocketserver on 127.0.0.2 (tests/federation/conftest.py).
What this exercises end to end: our remote directory query (``/query/directory``),
``make_join`` / ``v2/send_join`` against Synapse and the checks of its answer, the
room held here afterwards (/sync, our sender, Synapse's ``PUT /send``), ``/backfill``
from Synapse when our user scrolls back past the join, leave and rejoin, a join by ID
with ``via``, and a join Synapse refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.federation.conftest import pocket_tls_config
from tests.federation.synapse_peer import SynapsePeer, TestCA
from tests.federation.test_synapse_rooms import (
    Client,
    _has_message,
    _pocket_user,
    _synapse_user,
    _timeline,
)
from tests.harness import RunningServer, running_server

MESSAGES = 50


@pytest.fixture(scope="module")
def pocket(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    config = pocket_tls_config(tmp_path_factory.mktemp("pocket"), test_ca)
    with running_server(config) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


def _member_event(user_id: str, membership: str) -> Any:
    return lambda answer, room_id: any(
        ev.get("type") == "m.room.member"
        and ev.get("state_key") == user_id
        and ev.get("content", {}).get("membership") == membership
        for ev in _timeline(answer, room_id)
    )


def _backfill_all(client: Client, room_id: str) -> list[str]:
    """Page /messages backwards to the start of the room; the message bodies, oldest
    first."""
    bodies: list[str] = []
    token: str | None = None
    for _ in range(40):
        params: dict[str, Any] = {"dir": "b", "limit": 10}
        if token is not None:
            params["from"] = token
        page = client.call("GET", f"/rooms/{quote(room_id)}/messages", **params)
        bodies.extend(
            ev["content"]["body"] for ev in page["chunk"] if ev.get("type") == "m.room.message"
        )
        if "end" not in page:
            break
        token = page["end"]
    bodies.reverse()
    return bodies


def test_a_pocketserver_user_joins_a_synapse_room_by_alias(
    pocket: RunningServer, synapse: SynapsePeer
) -> None:
    carol = _synapse_user(synapse, "carol")
    dave = _pocket_user(pocket, "dave")
    room_id = carol.call(
        "POST",
        "/createRoom",
        {"preset": "public_chat", "name": "Synapse room", "room_alias_name": "hq"},
    )["room_id"]
    sent = [f"history {i}" for i in range(MESSAGES)]
    for body in sent:
        carol.send(room_id, body)
    alias = f"#hq:{synapse.server_name}"

    # The client directory asks Synapse.
    found = dave.call("GET", f"/directory/room/{quote(alias)}")
    assert found["room_id"] == room_id
    assert synapse.server_name in found["servers"]
    r = dave.http.get(f"/_matrix/client/v3/directory/room/{quote('#nope:' + synapse.server_name)}")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")

    joined = dave.call("POST", f"/join/{quote(alias)}", {})
    assert joined == {"room_id": room_id}

    # /sync shows the room, with its state and our join.
    answer = dave.wait_for(lambda a: room_id in a.get("rooms", {}).get("join", {}), "the room")
    room = answer["rooms"]["join"][room_id]
    state = room.get("state", {}).get("events", []) + _timeline(answer, room_id)
    assert any(
        ev["type"] == "m.room.name" and ev["content"]["name"] == "Synapse room" for ev in state
    )
    assert any(ev["type"] == "m.room.member" and ev["state_key"] == carol.user_id for ev in state)

    # History before the join comes from Synapse's /backfill, in order.
    assert _backfill_all(dave, room_id) == sent

    # Messages cross both ways.
    dave.send(room_id, "hello from the pi")
    carol.wait_for(_has_message(room_id, "hello from the pi"), "dave's message")
    carol.send(room_id, "hello from synapse")
    dave.wait_for(_has_message(room_id, "hello from synapse"), "carol's message")

    # Leave: Synapse sees it.
    dave.call("POST", f"/rooms/{quote(room_id)}/leave", {})
    carol.wait_for(lambda a: _member_event(dave.user_id, "leave")(a, room_id), "dave's leave")

    # Rejoin (no user of ours is in the room: through Synapse again) and talk.
    carol.send(room_id, "while dave was away")
    assert dave.call("POST", f"/join/{quote(alias)}", {}) == {"room_id": room_id}
    carol.wait_for(lambda a: _member_event(dave.user_id, "join")(a, room_id), "dave's rejoin")
    carol.send(room_id, "welcome back")
    dave.wait_for(_has_message(room_id, "welcome back"), "carol's message after the rejoin")
    # What was said while dave was away fills the hole before the rejoin (backfill).
    assert _backfill_all(dave, room_id) == [
        *sent,
        "hello from the pi",
        "hello from synapse",
        "while dave was away",
        "welcome back",
    ]


def test_join_by_room_id_with_via_and_a_refused_join(
    pocket: RunningServer, synapse: SynapsePeer
) -> None:
    erin = _synapse_user(synapse, "erin")
    frank = _pocket_user(pocket, "frank")
    open_room = erin.call("POST", "/createRoom", {"preset": "public_chat"})["room_id"]
    erin.send(open_room, "open for all")
    closed = erin.call("POST", "/createRoom", {"preset": "private_chat", "name": "Secret"})[
        "room_id"
    ]
    erin.send(closed, "not for frank")

    # By ID, the server named by via (v12 room IDs name no server).
    r = frank.http.post(
        f"/_matrix/client/v3/join/{quote(open_room)}",
        params={"via": synapse.server_name},
        json={},
    )
    assert r.status_code == 200, r.text
    erin.wait_for(lambda a: _member_event(frank.user_id, "join")(a, open_room), "frank's join")
    erin.send(open_room, "hi frank")
    frank.wait_for(_has_message(open_room, "hi frank"), "erin's message")

    # Invite-only: Synapse's 403 reaches the client, and nothing shows in /sync.
    r = frank.http.post(
        f"/_matrix/client/v3/join/{quote(closed)}",
        params={"via": synapse.server_name},
        json={},
    )
    assert r.status_code == 403, r.text
    assert r.json()["errcode"] == "M_FORBIDDEN"
    full = frank.call("GET", "/sync")
    rooms = full.get("rooms", {})
    assert all(closed not in rooms.get(kind, {}) for kind in ("join", "invite", "leave"))
    r = frank.http.get(f"/_matrix/client/v3/rooms/{quote(closed)}/messages", params={"dir": "b"})
    assert r.status_code == 403

    # An unreachable server: a clear error, nothing joined.
    r = frank.http.post(f"/_matrix/client/v3/join/{quote('!nowhere:127.0.0.9:1')}", json={})
    assert (r.status_code, r.json()["errcode"]) == (502, "M_UNKNOWN")
    r = frank.http.get(f"/_matrix/client/v3/directory/room/{quote('#x:127.0.0.9:1')}")
    assert (r.status_code, r.json()["errcode"]) == (502, "M_UNKNOWN")
