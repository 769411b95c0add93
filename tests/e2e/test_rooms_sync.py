"""Rooms and sync through the real server: raw HTTP for exact answers, matrix-nio for a
real client's view."""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import quote

import httpx
import nio
import pytest

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def pair(server: RunningServer, new_user: str):
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    return a, b


def test_create_invite_join_send_sync(server: RunningServer, pair) -> None:
    a, b = pair
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as c:
        r = c.post(f"{V3}/createRoom", headers=A, json={"name": "Pair", "invite": [b["user_id"]]})
        assert r.status_code == 200, r.text
        room = r.json()["room_id"]
        first = c.get(f"{V3}/sync", headers=B).json()
        invite_state = first["rooms"]["invite"][room]["invite_state"]["events"]
        assert {"m.room.create", "m.room.name", "m.room.member"} <= {
            e["type"] for e in invite_state
        }
        # The inviter's member event comes along, as Synapse sends it.
        members = {e["state_key"] for e in invite_state if e["type"] == "m.room.member"}
        assert members == {a["user_id"], b["user_id"]}
        assert c.post(f"{V3}/rooms/{room}/join", headers=B).status_code == 200
        r = c.put(
            f"{V3}/rooms/{room}/send/m.room.message/txn1",
            headers=A,
            json={"msgtype": "m.text", "body": "hi"},
        )
        event_id = r.json()["event_id"]
        # Same transaction ID: same event, nothing new sent.
        again = c.put(
            f"{V3}/rooms/{room}/send/m.room.message/txn1",
            headers=A,
            json={"msgtype": "m.text", "body": "hi"},
        )
        assert again.json()["event_id"] == event_id
        second = c.get(f"{V3}/sync", headers=B, params={"since": first["next_batch"]}).json()
        joined = second["rooms"]["join"][room]
        timeline = joined["timeline"]["events"]
        bodies = [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"]
        assert bodies == ["hi"]
        assert "prev_batch" in joined["timeline"]
        assert joined["summary"]["m.joined_member_count"] == 2
        # The sender's own sync carries the transaction ID; others' don't.
        mine = c.get(f"{V3}/sync", headers=A).json()["rooms"]["join"][room]["timeline"]["events"]
        sent = [e for e in mine if e["event_id"] == event_id]
        assert sent[0]["unsigned"]["transaction_id"] == "txn1"
        assert all("transaction_id" not in e["unsigned"] for e in timeline)
        # Nothing new: an incremental sync with timeout 0 has no rooms.
        third = c.get(f"{V3}/sync", headers=B, params={"since": second["next_batch"]}).json()
        assert third["rooms"]["join"] == {}


def test_long_poll_wakes_promptly(server: RunningServer, pair) -> None:
    a, b = pair
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as c:
        room = c.post(f"{V3}/createRoom", headers=A, json={"preset": "public_chat"}).json()[
            "room_id"
        ]
        c.post(f"{V3}/join/{room}", headers=B)
        since = c.get(f"{V3}/sync", headers=B).json()["next_batch"]
    result: dict[str, object] = {}

    def wait() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as c2:
            started = time.perf_counter()
            r = c2.get(f"{V3}/sync", headers=B, params={"since": since, "timeout": 20000})
            result["elapsed"] = time.perf_counter() - started
            result["body"] = r.json()

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(1.0)
    with server.client() as c:
        sent_at = time.perf_counter()
        c.put(f"{V3}/rooms/{room}/send/m.room.message/w", headers=A, json={"body": "wake"})
    thread.join(30)
    assert result["elapsed"] < 5, result
    body = result["body"]
    events = body["rooms"]["join"][room]["timeline"]["events"]
    assert [e["content"]["body"] for e in events] == ["wake"]
    assert time.perf_counter() - sent_at < 5


def test_long_poll_times_out_empty(server: RunningServer, pair) -> None:
    a, _ = pair
    A = _auth(a["access_token"])
    with server.client() as c:
        since = c.get(f"{V3}/sync", headers=A).json()["next_batch"]
        started = time.perf_counter()
        r = c.get(f"{V3}/sync", headers=A, params={"since": since, "timeout": 700})
    assert 0.6 < time.perf_counter() - started < 5
    assert r.json()["rooms"]["join"] == {}
    assert r.json()["next_batch"] == since


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"since": "garbage"}, "M_INVALID_PARAM"),
        ({"timeout": "soon"}, "M_INVALID_PARAM"),
        ({"filter": "{not json"}, "M_NOT_JSON"),
        ({"filter": '{"room": 5}'}, "M_BAD_JSON"),
        ({"filter": "12345"}, "M_NOT_FOUND"),
        ({"full_state": "yes"}, "M_INVALID_PARAM"),
    ],
)
def test_sync_bad_parameters(server: RunningServer, pair, params, errcode) -> None:
    a, _ = pair
    with server.client() as c:
        r = c.get(f"{V3}/sync", headers=_auth(a["access_token"]), params=params)
    assert r.status_code in (400, 404), r.text
    assert r.json()["errcode"] == errcode


def test_filters_round_trip_and_apply(server: RunningServer, pair) -> None:
    a, _ = pair
    A = _auth(a["access_token"])
    definition = {"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}}}
    with server.client() as c:
        r = c.post(f"{V3}/user/{a['user_id']}/filter", headers=A, json=definition)
        filter_id = r.json()["filter_id"]
        assert c.get(f"{V3}/user/{a['user_id']}/filter/{filter_id}", headers=A).json() == definition
        other = c.post(f"{V3}/user/@someone:else/filter", headers=A, json=definition)
        assert other.status_code == 403
        room = c.post(f"{V3}/createRoom", headers=A, json={}).json()["room_id"]
        for i in range(4):
            c.put(f"{V3}/rooms/{room}/send/m.room.message/f{i}", headers=A, json={"body": str(i)})
        body = c.get(f"{V3}/sync", headers=A, params={"filter": filter_id}).json()
        timeline = body["rooms"]["join"][room]["timeline"]
        assert [e["content"]["body"] for e in timeline["events"]] == ["2", "3"]
        assert timeline["limited"] is True


def test_membership_errors_and_reads(server: RunningServer, pair, new_user: str) -> None:
    a, b = pair
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as c:
        room = c.post(f"{V3}/createRoom", headers=A, json={"name": "Private"}).json()["room_id"]
        # Not invited: can't join a private room, can't send, can't read state.
        r = c.post(f"{V3}/rooms/{room}/join", headers=B)
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_FORBIDDEN"
        r = c.put(f"{V3}/rooms/{room}/send/m.room.message/x", headers=B, json={"body": "x"})
        assert r.status_code == 403
        assert c.get(f"{V3}/rooms/{room}/state", headers=B).status_code == 403
        assert c.get(f"{V3}/rooms/{room}/members", headers=B).status_code == 403
        # Unknown room and bad IDs.
        assert c.post(f"{V3}/rooms/!nope:test.local/join", headers=B).status_code == 404
        assert (
            c.post(f"{V3}/rooms/not-a-room/join", headers=B).json()["errcode"] == "M_INVALID_PARAM"
        )
        r = c.post(f"{V3}/rooms/{room}/invite", headers=A, json={"user_id": "bob"})
        assert r.json()["errcode"] == "M_INVALID_PARAM"
        r = c.post(f"{V3}/rooms/{room}/invite", headers=A, json={})
        assert r.json()["errcode"] == "M_MISSING_PARAM"
        # Invite, join, kick, ban, unban.
        assert (
            c.post(
                f"{V3}/rooms/{room}/invite", headers=A, json={"user_id": b["user_id"]}
            ).status_code
            == 200
        )
        assert c.post(f"{V3}/rooms/{room}/join", headers=B).status_code == 200
        state = c.get(f"{V3}/rooms/{room}/state", headers=B).json()
        assert {e["type"] for e in state} >= {"m.room.create", "m.room.name", "m.room.power_levels"}
        name = c.get(f"{V3}/rooms/{room}/state/m.room.name", headers=B).json()
        assert name == {"name": "Private"}
        full = c.get(f"{V3}/rooms/{room}/state/m.room.name/", headers=B, params={"format": "event"})
        assert full.json()["type"] == "m.room.name"
        assert c.get(f"{V3}/rooms/{room}/state/m.room.topic", headers=B).status_code == 404
        # A member without power can't kick or change the name.
        assert (
            c.post(f"{V3}/rooms/{room}/kick", headers=B, json={"user_id": a["user_id"]}).status_code
            == 403
        )
        assert (
            c.put(f"{V3}/rooms/{room}/state/m.room.name", headers=B, json={"name": "x"}).status_code
            == 403
        )
        assert (
            c.post(
                f"{V3}/rooms/{room}/kick",
                headers=A,
                json={"user_id": b["user_id"], "reason": "bye"},
            ).status_code
            == 200
        )
        assert (
            c.put(
                f"{V3}/rooms/{room}/send/m.room.message/y", headers=B, json={"body": "y"}
            ).status_code
            == 403
        )
        # After leaving, the state as it was at the kick is still readable.
        assert c.get(f"{V3}/rooms/{room}/state", headers=B).status_code == 200
        assert (
            c.post(f"{V3}/rooms/{room}/ban", headers=A, json={"user_id": b["user_id"]}).status_code
            == 200
        )
        assert (
            c.post(
                f"{V3}/rooms/{room}/invite", headers=A, json={"user_id": b["user_id"]}
            ).status_code
            == 403
        )
        assert (
            c.post(
                f"{V3}/rooms/{room}/unban", headers=A, json={"user_id": b["user_id"]}
            ).status_code
            == 200
        )
        members = c.get(
            f"{V3}/rooms/{room}/members", headers=A, params={"membership": "join"}
        ).json()
        assert [m["state_key"] for m in members["chunk"]] == [a["user_id"]]
        joined = c.get(f"{V3}/rooms/{room}/joined_members", headers=A).json()["joined"]
        assert list(joined) == [a["user_id"]]
        assert joined[a["user_id"]]["display_name"] == a["user_id"][1:].split(":")[0]
        assert room in c.get(f"{V3}/joined_rooms", headers=A).json()["joined_rooms"]
        assert room not in c.get(f"{V3}/joined_rooms", headers=B).json()["joined_rooms"]


def test_aliases_and_directory(server: RunningServer, pair, new_user: str) -> None:
    a, b = pair
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as c:
        r = c.post(
            f"{V3}/createRoom",
            headers=A,
            json={"room_alias_name": new_user, "visibility": "public"},
        )
        room = r.json()["room_id"]
        alias = f"#{new_user}:{server.server_name}"
        q_alias = quote(alias)
        r = c.post(f"{V3}/createRoom", headers=A, json={"room_alias_name": new_user})
        assert r.status_code == 400
        assert r.json()["errcode"] == "M_ROOM_IN_USE"
        assert c.get(f"{V3}/directory/room/{q_alias}").json()["room_id"] == room
        canonical = c.get(f"{V3}/rooms/{room}/state/m.room.canonical_alias", headers=A).json()
        assert canonical == {"alias": alias}
        assert c.post(f"{V3}/join/{q_alias}", headers=B).json() == {"room_id": room}
        assert c.get(f"{V3}/directory/list/room/{room}").json() == {"visibility": "public"}
        assert (
            c.put(
                f"{V3}/directory/list/room/{room}", headers=B, json={"visibility": "private"}
            ).status_code
            == 403
        )
        assert (
            c.put(
                f"{V3}/directory/list/room/{room}", headers=A, json={"visibility": "private"}
            ).status_code
            == 200
        )
        second = f"#{new_user}-two:{server.server_name}"
        q_second = quote(second)
        assert (
            c.put(f"{V3}/directory/room/{q_second}", headers=B, json={"room_id": room}).status_code
            == 200
        )
        assert (
            c.put(f"{V3}/directory/room/{q_second}", headers=B, json={"room_id": room}).status_code
            == 409
        )
        assert set(c.get(f"{V3}/rooms/{room}/aliases", headers=B).json()["aliases"]) == {
            alias,
            second,
        }
        # Bob made the second alias and may delete it; he may not delete Alice's.
        assert c.delete(f"{V3}/directory/room/{q_alias}", headers=B).status_code == 403
        assert c.delete(f"{V3}/directory/room/{q_second}", headers=B).status_code == 200
        assert c.get(f"{V3}/directory/room/{q_second}").status_code == 404
        assert (
            c.put(
                f"{V3}/directory/room/%23x:other.server", headers=A, json={"room_id": room}
            ).status_code
            == 400
        )


def test_profile_propagates_to_rooms(server: RunningServer, pair) -> None:
    a, b = pair
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as c:
        room = c.post(f"{V3}/createRoom", headers=A, json={"preset": "public_chat"}).json()[
            "room_id"
        ]
        c.post(f"{V3}/join/{room}", headers=B)
        r = c.put(
            f"{V3}/profile/{b['user_id']}/displayname", headers=B, json={"displayname": "Bobby"}
        )
        assert r.status_code == 200
        assert c.get(f"{V3}/profile/{b['user_id']}/displayname").json() == {"displayname": "Bobby"}
        member = c.get(f"{V3}/rooms/{room}/state/m.room.member/{b['user_id']}", headers=A).json()
        assert member == {"membership": "join", "displayname": "Bobby"}
        assert (
            c.put(
                f"{V3}/profile/{a['user_id']}/displayname", headers=B, json={"displayname": "x"}
            ).status_code
            == 403
        )
        assert (
            c.put(
                f"{V3}/profile/{b['user_id']}/avatar_url",
                headers=B,
                json={"avatar_url": "http://x"},
            ).json()["errcode"]
            == "M_INVALID_PARAM"
        )
        assert (
            c.put(
                f"{V3}/profile/{b['user_id']}/displayname", headers=B, json={"displayname": 5}
            ).json()["errcode"]
            == "M_BAD_JSON"
        )
        assert c.get(f"{V3}/profile/@nobody:{server.server_name}").status_code == 404


def test_nio_two_users_chat(server: RunningServer, new_user: str) -> None:
    """Two matrix-nio clients: create, invite, join, exchange messages, see each other."""
    server.register(new_user + "x", "pw-x")
    server.register(new_user + "y", "pw-y")
    ux, uy = f"@{new_user}x:{server.server_name}", f"@{new_user}y:{server.server_name}"

    async def scenario() -> None:
        x = nio.AsyncClient(server.base_url, ux)
        y = nio.AsyncClient(server.base_url, uy)
        try:
            assert isinstance(await x.login("pw-x"), nio.LoginResponse)
            assert isinstance(await y.login("pw-y"), nio.LoginResponse)
            created = await x.room_create(name="nio room", invite=[uy])
            assert isinstance(created, nio.RoomCreateResponse), created
            room_id = created.room_id
            await y.sync(timeout=0)
            assert room_id in y.invited_rooms
            joined = await y.join(room_id)
            assert isinstance(joined, nio.JoinResponse), joined
            sent = await x.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": "hello y"}
            )
            assert isinstance(sent, nio.RoomSendResponse), sent
            await y.sync(timeout=0)
            room = y.rooms[room_id]
            assert room.name == "nio room"
            assert set(room.users) == {ux, uy}
            response = await y.sync(timeout=5000, since=y.next_batch) if False else None
            del response
            await x.sync(timeout=0)
            reply = await y.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": "hi x"}
            )
            assert isinstance(reply, nio.RoomSendResponse)
            got = await x.sync(timeout=5000, since=x.next_batch)
            assert isinstance(got, nio.SyncResponse), got
            bodies = [getattr(ev, "body", None) for ev in got.rooms.join[room_id].timeline.events]
            assert "hi x" in bodies
            left = await y.room_leave(room_id)
            assert isinstance(left, nio.RoomLeaveResponse)
        finally:
            await x.close()
            await y.close()

    asyncio.run(scenario())


def test_members_at_a_point_in_time(server: RunningServer, pair, new_user: str) -> None:
    a, b = pair
    c_user = server.register(new_user + "c")
    A, B, C = _auth(a["access_token"]), _auth(b["access_token"]), _auth(c_user["access_token"])
    with server.client() as c:
        room = c.post(f"{V3}/createRoom", headers=A, json={"preset": "public_chat"}).json()[
            "room_id"
        ]
        c.post(f"{V3}/join/{room}", headers=B)
        before_carol = c.get(f"{V3}/sync", headers=A).json()["next_batch"]
        c.post(f"{V3}/join/{room}", headers=C)
        now = c.get(f"{V3}/rooms/{room}/members", headers=A).json()["chunk"]
        assert c_user["user_id"] in {m["state_key"] for m in now}
        then = c.get(f"{V3}/rooms/{room}/members", headers=A, params={"at": before_carol})
        assert then.status_code == 200, then.text
        assert {m["state_key"] for m in then.json()["chunk"]} == {a["user_id"], b["user_id"]}
        bad = c.get(f"{V3}/rooms/{room}/members", headers=A, params={"at": "nonsense"})
        assert bad.status_code == 400
        assert bad.json()["errcode"] == "M_INVALID_PARAM"


def test_use_state_after(server: RunningServer, pair) -> None:
    """With use_state_after, ``state_after`` holds the state up to the END of the
    timeline (including state events in it) and ``state`` is omitted."""
    a, b = pair
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as c:
        room = c.post(
            f"{V3}/createRoom", headers=A, json={"preset": "public_chat", "name": "One"}
        ).json()["room_id"]
        c.post(f"{V3}/join/{room}", headers=B)
        since = c.get(f"{V3}/sync", headers=B, params={"use_state_after": "true"}).json()
        entry = since["rooms"]["join"][room]
        assert "state" not in entry
        names = [e for e in entry["state_after"]["events"] if e["type"] == "m.room.name"]
        assert names[0]["content"] == {"name": "One"}
        c.put(f"{V3}/rooms/{room}/state/m.room.name", headers=A, json={"name": "Two"})
        inc = c.get(
            f"{V3}/sync",
            headers=B,
            params={"since": since["next_batch"], "use_state_after": "true"},
        ).json()["rooms"]["join"][room]
        assert [
            e["content"] for e in inc["state_after"]["events"] if e["type"] == "m.room.name"
        ] == [{"name": "Two"}]
        assert any(e["type"] == "m.room.name" for e in inc["timeline"]["events"])
        plain = c.get(f"{V3}/sync", headers=B, params={"since": since["next_batch"]}).json()
        assert "state_after" not in plain["rooms"]["join"][room]
        assert plain["rooms"]["join"][room]["state"]["events"] == []
        bad = c.get(f"{V3}/sync", headers=B, params={"use_state_after": "maybe"})
        assert bad.json()["errcode"] == "M_INVALID_PARAM"
