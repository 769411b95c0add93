"""Membership verbs aimed at another server answer a clear error and change nothing
(issue #10 section 0: "Until a part works, it must answer a clear Matrix error, never
a silent 200"): inviting ``@bob:matrix.org`` used to answer 200 and send nothing.
The server here federates with no one (``federation_domain_whitelist: []``, so no
request leaves the machine): joins, knocks and invites that need another server are
refused 403 and change nothing.

Run twice: with a plain server name, and with an IPv6 literal and a port, where
``@u:[::1]`` is another server than ``@u:[::1]:8448`` (core/locality.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.clients import V3, User, close_all, err
from tests.harness import RunningServer, make_config, running_server

FEDERATION_UNAVAILABLE = (403, "M_FORBIDDEN")
JOIN_FAILED = (403, "M_FORBIDDEN")


@pytest.fixture(scope="module", params=["test.local", "[::1]:8448"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("remote"),
        server_name=request.param,
        federation_domain_whitelist=[],
    )
    with running_server(config) as s:
        yield s
        close_all()
    assert "Traceback" not in s.log_text(), s.log_text()


def _other_servers(server: RunningServer) -> list[str]:
    """Server names that are not this one, however alike."""
    if server.server_name == "[::1]:8448":
        return ["[::1]", "[::1]:8449", "matrix.org"]
    return ["matrix.org", "test.local:8448", "other.test.local"]


def _member_state(user: User, room: str) -> dict[str, str]:
    r = user.get(f"/rooms/{room}/state")
    assert r.status_code == 200, r.text
    state = r.json()
    return {
        ev["state_key"]: ev["content"]["membership"]
        for ev in state
        if ev["type"] == "m.room.member"
    }


def _timeline(user: User, room: str) -> list[str]:
    chunk = user.ok(f"/rooms/{room}/messages", dir="b", limit="100")["chunk"]
    return [ev["event_id"] for ev in chunk]


def _not_allowed(r: httpx.Response) -> None:
    """Refused because federation with that server is not allowed here."""
    assert err(r) == FEDERATION_UNAVAILABLE, r.text
    assert "not allowed" in r.json()["error"], r.text


def test_invite_of_remote_user_is_refused_and_writes_nothing(server: RunningServer) -> None:
    alice = User(server, "inviter")
    room = alice.create(preset="private_chat")
    members, timeline = _member_state(alice, room), _timeline(alice, room)
    for other in _other_servers(server):
        bob = f"@bob:{other}"
        _not_allowed(alice.post(f"/rooms/{room}/invite", {"user_id": bob}))
        # the same invite written as a state event
        r = alice.http.put(
            f"{V3}/rooms/{room}/state/m.room.member/{quote(bob)}", json={"membership": "invite"}
        )
        _not_allowed(r)
    assert _member_state(alice, room) == members
    assert _timeline(alice, room) == timeline
    assert not any(room in rooms.get("invite", {}) for rooms in [alice.sync().get("rooms", {})])


def test_invite_of_local_user_still_works(server: RunningServer) -> None:
    alice, bob = User(server, "inviter2"), User(server, "invitee2")
    assert bob.user_id.endswith(":" + server.server_name)
    room = alice.create(preset="private_chat")
    r = alice.post(f"/rooms/{room}/invite", {"user_id": bob.user_id})
    assert r.status_code == 200, r.text
    assert _member_state(alice, room)[bob.user_id] == "invite"
    assert room in bob.sync()["rooms"]["invite"]


def test_create_room_with_refused_remote_invitee(server: RunningServer) -> None:
    """As Synapse's createRoom: the room is made, the local invitee invited, then the
    remote invite's refusal fails the request; that invite is not in the room."""
    alice, bob = User(server, "creator"), User(server, "localinvitee")
    before = alice.ok("/joined_rooms")["joined_rooms"]
    other = _other_servers(server)[0]
    r = alice.http.post(f"{V3}/createRoom", json={"invite": [bob.user_id, f"@bob:{other}"]})
    _not_allowed(r)
    made = [room for room in alice.ok("/joined_rooms")["joined_rooms"] if room not in before]
    assert len(made) == 1
    members = _member_state(alice, made[0])
    assert members == {alice.user_id: "join", bob.user_id: "invite"}


def test_join_and_knock_of_remote_rooms_and_aliases(server: RunningServer) -> None:
    alice = User(server, "joiner")
    before = alice.ok("/joined_rooms")["joined_rooms"]
    for other in _other_servers(server):
        alias = quote(f"#room:{other}")
        assert err(alice.post(f"/join/{alias}")) == (403, "M_FORBIDDEN")
        assert err(alice.get(f"/directory/room/{alias}")) == (403, "M_FORBIDDEN")
        assert err(alice.post(f"/knock/{alias}")) == (403, "M_FORBIDDEN")
        _not_allowed(alice.post(f"/knock/{quote(f'!someroom:{other}')}"))
        assert err(alice.post(f"/join/{quote(f'!someroom:{other}')}")) == JOIN_FAILED
        assert err(alice.post(f"/rooms/{quote(f'!someroom:{other}')}/join")) == JOIN_FAILED
        # a room ID of this server's name that it does not know, with other servers named
        unknown = quote(f"!unknown:{server.server_name}")
        for param in ("via", "server_name"):
            r = alice.http.post(f"{V3}/join/{unknown}", params={param: other}, json={})
            assert err(r) == JOIN_FAILED, r.text
    assert alice.ok("/joined_rooms")["joined_rooms"] == before


def test_unknown_local_room_and_alias_still_404(server: RunningServer) -> None:
    alice = User(server, "joiner404")
    room = quote(f"!unknown:{server.server_name}")
    alias = quote(f"#unknown:{server.server_name}")
    assert err(alice.post(f"/join/{room}")) == (404, "M_NOT_FOUND")
    assert err(alice.post(f"/rooms/{room}/join")) == (404, "M_NOT_FOUND")
    assert err(alice.post(f"/join/{alias}")) == (404, "M_NOT_FOUND")
    assert err(alice.post(f"/knock/{alias}")) == (404, "M_NOT_FOUND")
    via_self = alice.http.post(f"{V3}/join/{room}", params={"via": server.server_name}, json={})
    assert err(via_self) == (404, "M_NOT_FOUND")


def test_local_alias_join_works(server: RunningServer) -> None:
    alice, bob = User(server, "aliasowner"), User(server, "aliasjoiner")
    room = alice.create(preset="public_chat", room_alias_name="here")
    r = bob.post(f"/join/{quote(f'#here:{server.server_name}')}")
    assert r.status_code == 200, r.text
    assert r.json() == {"room_id": room}
    assert _member_state(alice, room)[bob.user_id] == "join"


def test_ban_of_remote_user_is_room_state(server: RunningServer) -> None:
    """A pre-emptive ban of another server's user needs nothing from that server (as
    Synapse): it is allowed, and kicking someone not in the room is still refused."""
    alice = User(server, "banner")
    room = alice.create(preset="public_chat")
    mallory = f"@mallory:{_other_servers(server)[0]}"
    r = alice.post(f"/rooms/{room}/ban", {"user_id": mallory, "reason": "spam"})
    assert r.status_code == 200, r.text
    assert _member_state(alice, room)[mallory] == "ban"
    assert alice.post(f"/rooms/{room}/unban", {"user_id": mallory}).status_code == 200
    assert _member_state(alice, room)[mallory] == "leave"
    assert err(alice.post(f"/rooms/{room}/kick", {"user_id": mallory})) == (403, "M_FORBIDDEN")
