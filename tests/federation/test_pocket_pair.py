"""Two pocketservers federating with each other, each a real subprocess: server A on
127.0.0.2, server B on 127.0.0.3, both named by IP literal and port, each with a TLS
federation listener whose certificate comes from one test CA that both trust.

Every step goes through both servers' federation code on both sides (no Synapse in
between to paper over a fault of ours): joins by alias both ways (``/query/directory``,
``make_join`` / ``v2/send_join``), messages both ways (our sender, our inbound
transactions), an invite accepted (``v2/invite``, then a join with no ``via``), typing
and a read receipt (EDUs), a remote profile (``/query/profile``), media uploaded on one
and downloaded through the other (``/federation/v1/media/download``), and a leave.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from PIL import Image

from tests.federation.conftest import pocket_tls_config
from tests.federation.synapse_peer import TestCA
from tests.federation.test_synapse_rooms import (  # noqa: F401 (fixture)
    Client,
    PresenceSeen,
    _close_clients,
    _ephemeral,
    _has_message,
    _pocket_user,
    _timeline,
)
from tests.harness import RunningServer, running_server


def _pocket(
    tmp_path_factory: pytest.TempPathFactory, ca: TestCA, host: str
) -> Iterator[RunningServer]:
    config = pocket_tls_config(tmp_path_factory.mktemp(f"pocket-{host}"), ca, host=host)
    with running_server(config) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


@pytest.fixture(scope="module")
def server_a(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    yield from _pocket(tmp_path_factory, test_ca, "127.0.0.2")


@pytest.fixture(scope="module")
def server_b(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    yield from _pocket(tmp_path_factory, test_ca, "127.0.0.3")


def _member(room_id: str, user_id: str, membership: str) -> Callable[[Any], bool]:
    return lambda a: any(
        ev.get("type") == "m.room.member"
        and ev.get("state_key") == user_id
        and ev.get("content", {}).get("membership") == membership
        for ev in _timeline(a, room_id)
    )


def _typing(room_id: str, user_id: str) -> Callable[[Any], bool]:
    return lambda a: any(
        ev.get("type") == "m.typing" and user_id in ev.get("content", {}).get("user_ids", [])
        for ev in _ephemeral(a, room_id)
    )


def _read_receipt(room_id: str, event_id: str, user_id: str) -> Callable[[Any], bool]:
    return lambda a: any(
        ev.get("type") == "m.receipt"
        and user_id in ev.get("content", {}).get(event_id, {}).get("m.read", {})
        for ev in _ephemeral(a, room_id)
    )


def _invited(room_id: str) -> Callable[[Any], bool]:
    return lambda a: room_id in a.get("rooms", {}).get("invite", {})


def _public_room_with_alias(owner: Client, server: RunningServer, local: str) -> tuple[str, str]:
    room_id = owner.call(
        "POST",
        "/createRoom",
        {"preset": "public_chat", "name": f"room {local}", "room_alias_name": local},
    )["room_id"]
    return str(room_id), f"#{local}:{server.server_name}"


def _join_by_alias(user: Client, alias: str, room_id: str, owner: Client) -> None:
    found = user.call("GET", f"/directory/room/{quote(alias)}")
    assert found["room_id"] == room_id
    assert user.call("POST", f"/join/{quote(alias)}", {}) == {"room_id": room_id}
    user.wait_for(lambda a: room_id in a.get("rooms", {}).get("join", {}), "the joined room")
    owner.wait_for(_member(room_id, user.user_id, "join"), f"{user.user_id}'s join")


def test_two_pocketservers_federate(server_a: RunningServer, server_b: RunningServer) -> None:
    alice = _pocket_user(server_a, "alice")
    bob = _pocket_user(server_b, "bob")
    alice.wait_for(lambda a: True, "a first sync")
    bob.wait_for(lambda a: True, "a first sync")

    # Joins by alias, both ways.
    room_a, alias_a = _public_room_with_alias(alice, server_a, "on-a")
    alice.send(room_a, "before bob came")
    _join_by_alias(bob, alias_a, room_a, alice)
    room_b, alias_b = _public_room_with_alias(bob, server_b, "on-b")
    _join_by_alias(alice, alias_b, room_b, bob)
    name = bob.call("GET", f"/rooms/{quote(room_a)}/state/m.room.name")
    assert name == {"name": "room on-a"}

    # Messages both ways, in both rooms.
    for room_id in (room_a, room_b):
        alice.send(room_id, f"alice in {room_id}")
        bob.wait_for(_has_message(room_id, f"alice in {room_id}"), "alice's message")
        bob.send(room_id, f"bob in {room_id}")
        alice.wait_for(_has_message(room_id, f"bob in {room_id}"), "bob's message")

    # An invite from B to A's user, accepted with a join that names no server.
    private = bob.call("POST", "/createRoom", {"preset": "private_chat", "name": "Just us"})[
        "room_id"
    ]
    bob.send(private, "psst")
    bob.call("POST", f"/rooms/{quote(private)}/invite", {"user_id": alice.user_id})
    invite = alice.wait_for(_invited(private), "bob's invite")
    stripped = invite["rooms"]["invite"][private]["invite_state"]["events"]
    assert {"m.room.name", "m.room.create"} <= {ev["type"] for ev in stripped}
    assert alice.call("POST", f"/join/{quote(private)}", {}) == {"room_id": private}
    bob.wait_for(_member(private, alice.user_id, "join"), "alice's accepting join")
    bob.send(private, "welcome in")
    alice.wait_for(_has_message(private, "welcome in"), "bob's message in the private room")

    # Typing crosses both ways.
    bob.call(
        "PUT",
        f"/rooms/{quote(room_a)}/typing/{quote(bob.user_id)}",
        {"typing": True, "timeout": 30000},
    )
    alice.wait_for(_typing(room_a, bob.user_id), "bob typing")
    alice.call(
        "PUT",
        f"/rooms/{quote(room_a)}/typing/{quote(alice.user_id)}",
        {"typing": True, "timeout": 30000},
    )
    bob.wait_for(_typing(room_a, alice.user_id), "alice typing")

    # A read receipt crosses.
    read_me = alice.send(room_a, "read me")
    bob.wait_for(_has_message(room_a, "read me"), "alice's message to read")
    bob.call("POST", f"/rooms/{quote(room_a)}/receipt/m.read/{quote(read_me)}", {})
    alice.wait_for(_read_receipt(room_a, read_me, bob.user_id), "bob's read receipt")

    # A remote profile.
    bob.call("PUT", f"/profile/{quote(bob.user_id)}/displayname", {"displayname": "Bob of B"})
    profile = alice.call("GET", f"/profile/{quote(bob.user_id)}")
    assert profile.get("displayname") == "Bob of B", profile
    r = alice.http.get(f"/_matrix/client/v3/profile/{quote('@nobody:' + server_b.server_name)}")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")

    # Media uploaded on A, downloaded through B.
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "teal").save(buf, "PNG")
    data = buf.getvalue()
    r = alice.http.post(
        "/_matrix/media/v3/upload",
        content=data,
        headers={"Content-Type": "image/png"},
        params={"filename": "pi.png"},
    )
    assert r.status_code == 200, r.text
    origin, media_id = r.json()["content_uri"].removeprefix("mxc://").split("/")
    assert origin == server_a.server_name
    r = bob.http.get(f"/_matrix/client/v1/media/download/{origin}/{media_id}", timeout=60)
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["content-type"] == "image/png"
    r = bob.http.get(f"/_matrix/client/v1/media/download/{origin}/nosuchmedia", timeout=60)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")

    # A leave, seen by the other side.
    bob.call("POST", f"/rooms/{quote(room_a)}/leave", {})
    alice.wait_for(_member(room_a, bob.user_id, "leave"), "bob's leave")
    alice.send(room_a, "after bob left")
    members = alice.call("GET", f"/rooms/{quote(room_a)}/joined_members")["joined"]
    assert set(members) == {alice.user_id}


def test_presence_crosses_between_two_pocketservers(
    server_a: RunningServer, server_b: RunningServer
) -> None:
    """On a join each side learns the other's presence (the new server gets our
    members'; our joining user's goes to the servers in the room), then every change
    crosses to the servers sharing a room (server-server-api.md "Presence")."""
    carol = _pocket_user(server_a, "carol")
    dave = _pocket_user(server_b, "dave")
    carol.wait_for(lambda a: True, "a first sync")  # syncing: online
    dave.wait_for(lambda a: True, "a first sync")
    room_id, alias = _public_room_with_alias(carol, server_a, "presence-on-a")
    carol_saw, dave_saw = PresenceSeen(), PresenceSeen()
    assert dave.call("POST", f"/join/{quote(alias)}", {}) == {"room_id": room_id}

    # Nobody changed presence since: what each side sees came with the join.
    dave.wait_for(dave_saw(dave_saw.has(carol.user_id, "online")), "carol online")
    assert "last_active_ago" in dave_saw.latest[carol.user_id]
    carol.wait_for(carol_saw(carol_saw.has(dave.user_id, "online")), "dave online")

    # A change crosses, with its status message.
    carol.call(
        "PUT",
        f"/presence/{quote(carol.user_id)}/status",
        {"presence": "unavailable", "status_msg": "brb"},
    )
    dave.wait_for(dave_saw(dave_saw.has(carol.user_id, "unavailable")), "carol unavailable")
    assert dave_saw.latest[carol.user_id]["status_msg"] == "brb"
    status = dave.call("GET", f"/presence/{quote(carol.user_id)}/status")
    assert (status["presence"], status.get("status_msg")) == ("unavailable", "brb")
    # The deprecated room initialSync shows the remote member's presence too.
    r = dave.http.get(f"/_matrix/client/v3/rooms/{quote(room_id)}/initialSync")
    assert r.status_code == 200, r.text
    members = {ev["content"]["user_id"]: ev["content"] for ev in r.json()["presence"]}
    assert members[carol.user_id]["presence"] == "unavailable"
    assert "last_active_ago" in members[carol.user_id]

    dave.call("PUT", f"/presence/{quote(dave.user_id)}/status", {"presence": "unavailable"})
    carol.wait_for(carol_saw(carol_saw.has(dave.user_id, "unavailable")), "dave unavailable")
