"""Room requests as Synapse answers them (SyTest 10apidoc/33room-members, 34room-messages,
30rooms/01state, 80torture/03events and 20json), through the real server."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"


def _auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


@pytest.fixture
def c(server: RunningServer):
    with server.client() as client:
        yield client


def _room(c: httpx.Client, user: dict[str, str], **body: object) -> str:
    r = c.post(f"{V3}/createRoom", headers=_auth(user), json={"preset": "public_chat", **body})
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


def _member(c: httpx.Client, user: dict[str, str], room: str, who: str) -> dict[str, object]:
    r = c.get(f"{V3}/rooms/{quote(room)}/state/m.room.member/{quote(who)}", headers=_auth(user))
    assert r.status_code == 200, r.text
    return dict(r.json())


def _member_event_ids(c: httpx.Client, user: dict[str, str], room: str, who: str) -> list[str]:
    r = c.get(f"{V3}/rooms/{quote(room)}/messages", headers=_auth(user), params={"dir": "b"})
    return [
        e["event_id"]
        for e in r.json()["chunk"]
        if e["type"] == "m.room.member" and e["state_key"] == who
    ]


def test_join_with_custom_content(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    alice = server.register(new_user + "a")
    bob = server.register(new_user + "b")
    room = _room(c, alice, room_alias_name=new_user)
    r = c.post(f"{V3}/join/{quote(room)}", headers=_auth(bob), json={"foo": "bar", "reason": "hi"})
    assert r.status_code == 200, r.text
    assert r.json() == {"room_id": room}
    content = _member(c, alice, room, bob["user_id"])
    assert content == {
        "membership": "join",
        "displayname": new_user + "b",
        "foo": "bar",
        "reason": "hi",
    }
    # By alias too; a per-room display name is kept, as Synapse's per-room profiles.
    carol = server.register(new_user + "c")
    alias = f"#{new_user}:{server.server_name}"
    r = c.post(f"{V3}/join/{quote(alias)}", headers=_auth(carol), json={"displayname": "C in here"})
    assert r.status_code == 200, r.text
    assert _member(c, alice, room, carol["user_id"])["displayname"] == "C in here"


def test_join_content_refused_parts(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    alice = server.register(new_user + "a", admin=True)
    bob = server.register(new_user + "b")
    room = _room(c, alice)
    for body in ({"displayname": 5}, {"avatar_url": "x" * 1001}, {"displayname": "d" * 257}):
        r = c.post(f"{V3}/rooms/{quote(room)}/join", headers=_auth(bob), json=body)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON"), body
    assert c.get(f"{V3}/joined_rooms", headers=_auth(bob)).json()["joined_rooms"] == []
    # Only this server names the user authorising a restricted join: a client's
    # join_authorised_via_users_server (here naming the room's admin) is dropped.
    r = c.post(
        f"{V3}/rooms/{quote(room)}/join",
        headers=_auth(bob),
        json={"join_authorised_via_users_server": alice["user_id"], "membership": "leave"},
    )
    assert r.status_code == 200, r.text
    assert _member(c, alice, room, bob["user_id"]) == {
        "membership": "join",
        "displayname": new_user + "b",
    }


def test_joining_twice_writes_no_event(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    alice = server.register(new_user + "a")
    bob = server.register(new_user + "b")
    room = _room(c, alice)
    for user in (alice, bob, bob):
        r = c.post(f"{V3}/rooms/{quote(room)}/join", headers=_auth(user), json={})
        assert r.status_code == 200, r.text
    assert len(_member_event_ids(c, alice, room, alice["user_id"])) == 1
    assert len(_member_event_ids(c, alice, room, bob["user_id"])) == 1
    # Other content is a change: a new event.
    r = c.post(f"{V3}/rooms/{quote(room)}/join", headers=_auth(bob), json={"reason": "again"})
    assert r.status_code == 200
    assert len(_member_event_ids(c, alice, room, bob["user_id"])) == 2


def test_post_send_without_txn_id(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    alice = server.register(new_user + "a")
    room = _room(c, alice, room_version="6")
    url = f"{V3}/rooms/{quote(room)}/send/m.room.message"
    body = {"msgtype": "m.text", "body": "hello"}
    first = c.post(url, headers=_auth(alice), json=body)
    second = c.post(url, headers=_auth(alice), json=body)
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["event_id"] != second.json()["event_id"]  # no transaction: two events
    # Canonical JSON rules (room v6+) and size limits hold on this path too.
    for bad in (2**53, -(2**53), 1.1):
        r = c.post(url, headers=_auth(alice), json={"msgtype": "m.text", "body": bad})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON"), bad
    for raw in (b'{"body": NaN}', b'{"body": Infinity}', b'{"body": -Infinity}'):
        r = c.post(url, headers={**_auth(alice), "Content-Type": "application/json"}, content=raw)
        assert r.status_code == 400, raw
    r = c.post(url, headers=_auth(alice), json={"msgtype": "m.text", "body": "A" * 70000})
    assert r.status_code == 413
    r = c.post(url, headers=_auth(alice), json={"msgtype": "m.text", "body": 2**53 - 1})
    assert r.status_code == 200
    bodies = [
        e["content"].get("body")
        for e in c.get(
            f"{V3}/rooms/{quote(room)}/messages", headers=_auth(alice), params={"dir": "b"}
        ).json()["chunk"]
        if e["type"] == "m.room.message"
    ]
    assert bodies == [2**53 - 1, "hello", "hello"]
    # Without a token: 401, nothing sent.
    assert c.post(url, json=body).status_code == 401


def test_post_redact_without_txn_id(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    """POST /redact/{eventId} (no transaction ID, as Synapse serves it): redacts; a
    member without the redact level is refused and nothing is redacted."""
    alice = server.register(new_user + "a")
    bob = server.register(new_user + "b")
    room = _room(c, alice, room_version="10")
    r = c.post(f"{V3}/join/{quote(room)}", headers=_auth(bob), json={})
    assert r.status_code == 200, r.text
    url = f"{V3}/rooms/{quote(room)}/send/m.room.message"
    mine = c.post(url, headers=_auth(alice), json={"msgtype": "m.text", "body": "x"}).json()
    redact = f"{V3}/rooms/{quote(room)}/redact/{quote(mine['event_id'])}"
    r = c.post(redact, headers=_auth(bob), json={})
    assert r.status_code == 403, r.text
    event = f"{V3}/rooms/{quote(room)}/event/{quote(mine['event_id'])}"
    assert c.get(event, headers=_auth(alice)).json()["content"] == {
        "msgtype": "m.text",
        "body": "x",
    }
    r = c.post(redact, headers=_auth(alice), json={"reason": "oops"})
    assert r.status_code == 200, r.text
    got = c.get(event, headers=_auth(alice)).json()
    assert got["content"] == {}
    assert got["unsigned"]["redacted_by"] == r.json()["event_id"]
