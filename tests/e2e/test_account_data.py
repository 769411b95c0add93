"""Account data, tags, ignored users and read markers through the real server: raw HTTP
for exact answers, matrix-nio for a real client's view of what /sync carries."""

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


def _q(s: str) -> str:
    return quote(s, safe="")


@pytest.fixture
def alice(server: RunningServer, new_user: str) -> dict[str, str]:
    return server.register(new_user + "alice")


@pytest.fixture
def bob(server: RunningServer, new_user: str) -> dict[str, str]:
    return server.register(new_user + "bob")


def _room(c: httpx.Client, user: dict[str, str], **body: object) -> str:
    r = c.post(f"{V3}/createRoom", headers=_auth(user["access_token"]), json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


def _send(c: httpx.Client, user: dict[str, str], room: str, text: str) -> str:
    r = c.put(
        f"{V3}/rooms/{_q(room)}/send/m.room.message/{time.monotonic_ns()}",
        headers=_auth(user["access_token"]),
        json={"msgtype": "m.text", "body": text},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


def _sync(c: httpx.Client, user: dict[str, str], since: str | None = None, **params: str):
    if since:
        params["since"] = since
    r = c.get(f"{V3}/sync", headers=_auth(user["access_token"]), params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _err(r: httpx.Response, status: int, errcode: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["errcode"] == errcode, r.text


def _global_ad(body: dict) -> dict[str, dict]:
    """Global account data in a sync response, without the server's own m.push_rules."""
    events = body["account_data"]["events"]
    return {e["type"]: e["content"] for e in events if e["type"] != "m.push_rules"}


def _room_ad(body: dict, room: str) -> dict[str, dict]:
    entry = body["rooms"]["join"].get(room)
    return {e["type"]: e["content"] for e in entry["account_data"]["events"]} if entry else {}


# --- account data ------------------------------------------------------------------------


def test_global_and_room_account_data_round_trip(server: RunningServer, alice) -> None:
    A, me = _auth(alice["access_token"]), _q(alice["user_id"])
    with server.client() as c:
        room = _room(c, alice)
        url = f"{V3}/user/{me}/account_data/org.example.cfg"
        room_url = f"{V3}/user/{me}/rooms/{_q(room)}/account_data/org.example.cfg"
        _err(c.get(url, headers=A), 404, "M_NOT_FOUND")
        _err(c.get(room_url, headers=A), 404, "M_NOT_FOUND")
        assert c.put(url, headers=A, json={"a": [1, "é"]}).json() == {}
        assert c.get(url, headers=A).json() == {"a": [1, "é"]}
        # No inheritance between global and room account data.
        _err(c.get(room_url, headers=A), 404, "M_NOT_FOUND")
        assert c.put(room_url, headers=A, json={"b": True}).status_code == 200
        assert c.get(room_url, headers=A).json() == {"b": True}
        assert c.put(url, headers=A, json={}).status_code == 200
        assert c.get(url, headers=A).json() == {}
        # The r0 prefix works too.
        r0 = url.replace("/v3/", "/r0/")
        assert c.get(r0, headers=A).json() == {}


def test_account_data_errors(server: RunningServer, alice, bob) -> None:
    A, me = _auth(alice["access_token"]), _q(alice["user_id"])
    B = _auth(bob["access_token"])
    with server.client() as c:
        room = _room(c, alice)
        url = f"{V3}/user/{me}/account_data/org.example.x"
        room_url = f"{V3}/user/{me}/rooms/{_q(room)}/account_data/org.example.x"
        c.put(url, headers=A, json={"secret": 1})
        _err(c.get(url), 401, "M_MISSING_TOKEN")
        _err(c.put(url, json={}), 401, "M_MISSING_TOKEN")
        _err(c.get(url, headers={"Authorization": "Bearer nope"}), 401, "M_UNKNOWN_TOKEN")
        for method in ("get", "put"):
            for target in (url, room_url):
                kwargs = {"json": {"x": 1}} if method == "put" else {}
                _err(getattr(c, method)(target, headers=B, **kwargs), 403, "M_FORBIDDEN")
        for bad_room in ("notaroom", "@user:test.local", "!nodomain"):
            bad = f"{V3}/user/{me}/rooms/{_q(bad_room)}/account_data/org.example.x"
            _err(c.get(bad, headers=A), 400, "M_INVALID_PARAM")
            _err(c.put(bad, headers=A, json={}), 400, "M_INVALID_PARAM")
            _err(
                c.get(f"{V3}/user/{me}/rooms/{_q(bad_room)}/tags", headers=A),
                400,
                "M_INVALID_PARAM",
            )
        for managed in ("m.fully_read", "m.push_rules"):
            _err(
                c.put(f"{V3}/user/{me}/account_data/{managed}", headers=A, json={}),
                405,
                "M_BAD_JSON",
            )
            _err(
                c.put(
                    f"{V3}/user/{me}/rooms/{_q(room)}/account_data/{managed}",
                    headers=A,
                    json={"event_id": "$x"},
                ),
                405,
                "M_BAD_JSON",
            )
        headers = {**A, "Content-Type": "application/json"}
        _err(c.put(url, headers=headers, content=b"not json"), 400, "M_NOT_JSON")
        _err(c.put(url, headers=headers, content=b""), 400, "M_NOT_JSON")
        _err(c.put(url, headers=A, json=[1, 2]), 400, "M_BAD_JSON")
        _err(c.put(url, headers=A, json="text"), 400, "M_BAD_JSON")
        _err(c.put(url, headers=A, json={"big": "x" * 70_000}), 413, "M_TOO_LARGE")
        long_type = f"{V3}/user/{me}/account_data/{'t' * 256}"
        _err(c.put(long_type, headers=A, json={}), 400, "M_INVALID_PARAM")
        # Nothing above changed anything.
        assert c.get(url, headers=A).json() == {"secret": 1}
        _err(c.get(room_url, headers=A), 404, "M_NOT_FOUND")


def test_ignored_user_list_validation(server: RunningServer, alice, bob) -> None:
    A, me = _auth(alice["access_token"]), _q(alice["user_id"])
    url = f"{V3}/user/{me}/account_data/m.ignored_user_list"
    with server.client() as c:
        _err(c.put(url, headers=A, json={}), 400, "M_BAD_JSON")
        _err(c.put(url, headers=A, json={"ignored_users": [bob["user_id"]]}), 400, "M_BAD_JSON")
        _err(c.put(url, headers=A, json={"ignored_users": {"bob": {}}}), 400, "M_INVALID_PARAM")
        _err(
            c.put(url, headers=A, json={"ignored_users": {alice["user_id"]: {}}}),
            400,
            "M_INVALID_PARAM",
        )
        _err(c.get(url, headers=A), 404, "M_NOT_FOUND")
        good = {"ignored_users": {bob["user_id"]: {}}}
        assert c.put(url, headers=A, json=good).status_code == 200
        assert c.get(url, headers=A).json() == good


# --- sync ----------------------------------------------------------------------------------


def test_sync_initial_incremental_and_filtered(server: RunningServer, alice) -> None:
    A, me = _auth(alice["access_token"]), _q(alice["user_id"])
    with server.client() as c:
        room = _room(c, alice)
        c.put(f"{V3}/user/{me}/account_data/m.direct", headers=A, json={})
        c.put(f"{V3}/user/{me}/account_data/org.example.a", headers=A, json={"v": 1})
        c.put(f"{V3}/user/{me}/rooms/{_q(room)}/account_data/org.example.r", headers=A, json={})
        first = _sync(c, alice)
        assert _global_ad(first) == {"m.direct": {}, "org.example.a": {"v": 1}}
        assert _room_ad(first, room) == {"org.example.r": {}}
        # Nothing new: nothing sent again.
        second = _sync(c, alice, first["next_batch"])
        assert _global_ad(second) == {}
        assert second["rooms"]["join"] == {}
        c.put(f"{V3}/user/{me}/account_data/org.example.a", headers=A, json={"v": 2})
        c.put(f"{V3}/user/{me}/rooms/{_q(room)}/tags/u.work", headers=A, json={"order": 0.5})
        third = _sync(c, alice, second["next_batch"])
        assert _global_ad(third) == {"org.example.a": {"v": 2}}
        assert _room_ad(third, room) == {"m.tag": {"tags": {"u.work": {"order": 0.5}}}}
        # Filters: account_data.types and room.account_data.not_types.
        flt = '{"account_data":{"types":["m.*"]},"room":{"account_data":{"not_types":["m.tag"]}}}'
        filtered = _sync(c, alice, filter=flt)
        assert set(_global_ad(filtered)) == {"m.direct"}
        assert _room_ad(filtered, room) == {"org.example.r": {}}


def test_long_poll_wakes_on_account_data(server: RunningServer, alice) -> None:
    A, me = _auth(alice["access_token"]), _q(alice["user_id"])
    with server.client() as c:
        since = _sync(c, alice)["next_batch"]

    def later() -> None:
        time.sleep(0.5)
        with server.client() as c2:
            c2.put(f"{V3}/user/{me}/account_data/org.example.wake", headers=A, json={"w": 1})

    thread = threading.Thread(target=later)
    thread.start()
    started = time.monotonic()
    with server.client() as c:
        body = _sync(c, alice, since, timeout="20000")
    thread.join()
    assert time.monotonic() - started < 10
    assert _global_ad(body) == {"org.example.wake": {"w": 1}}


def test_newly_joined_room_brings_its_account_data(server: RunningServer, alice, bob) -> None:
    A, me = _auth(alice["access_token"]), _q(alice["user_id"])
    with server.client() as c:
        room = _room(c, bob, preset="public_chat")
        # Tags for a room before joining it are kept, and sent when the room arrives.
        r = c.put(f"{V3}/user/{me}/rooms/{_q(room)}/tags/m.favourite", headers=A, json={})
        assert r.status_code == 200
        since = _sync(c, alice)["next_batch"]
        assert c.post(f"{V3}/rooms/{_q(room)}/join", headers=A).status_code == 200
        body = _sync(c, alice, since)
        assert _room_ad(body, room) == {"m.tag": {"tags": {"m.favourite": {}}}}
        # Bob's view of his room has no trace of alice's tags.
        assert _room_ad(_sync(c, bob), room) == {}


# --- tags ----------------------------------------------------------------------------------


def test_tags_round_trip_and_errors(server: RunningServer, alice, bob) -> None:
    A, B, me = _auth(alice["access_token"]), _auth(bob["access_token"]), _q(alice["user_id"])
    with server.client() as c:
        room = _room(c, alice)
        tags = f"{V3}/user/{me}/rooms/{_q(room)}/tags"
        assert c.get(tags, headers=A).json() == {"tags": {}}
        assert c.put(f"{tags}/m.favourite", headers=A, json={"order": 0.1}).json() == {}
        assert c.put(f"{tags}/u.Work", headers=A, json={}).status_code == 200
        assert (
            c.put(f"{tags}/{_q('u.with space')}", headers=A, json={"order": 1}).status_code == 200
        )
        got = c.get(tags, headers=A).json()["tags"]
        assert got["m.favourite"] == {"order": 0.1}
        assert got["u.Work"] == {}
        assert got["u.with space"] == {"order": 1}
        # Replacing a tag's order.
        c.put(f"{tags}/m.favourite", headers=A, json={"order": 0.9})
        assert c.get(tags, headers=A).json()["tags"]["m.favourite"] == {"order": 0.9}
        # The tags are the room account data m.tag.
        ad = c.get(f"{V3}/user/{me}/rooms/{_q(room)}/account_data/m.tag", headers=A).json()
        assert ad["tags"]["u.Work"] == {}
        assert c.delete(f"{tags}/u.Work", headers=A).json() == {}
        assert c.delete(f"{tags}/u.Work", headers=A).status_code == 200  # already gone
        assert "u.Work" not in c.get(tags, headers=A).json()["tags"]
        # Errors change nothing.
        before = c.get(tags, headers=A).json()
        _err(c.get(tags, headers=B), 403, "M_FORBIDDEN")
        _err(c.put(f"{tags}/u.x", headers=B, json={}), 403, "M_FORBIDDEN")
        _err(c.delete(f"{tags}/m.favourite", headers=B), 403, "M_FORBIDDEN")
        _err(c.get(tags), 401, "M_MISSING_TOKEN")
        _err(c.put(f"{tags}/u.x", headers=A, json={"order": "1"}), 400, "M_BAD_JSON")
        _err(c.put(f"{tags}/u.x", headers=A, json={"order": 2}), 400, "M_INVALID_PARAM")
        _err(c.put(f"{tags}/u.x", headers=A, json=[0.5]), 400, "M_BAD_JSON")
        _err(c.put(f"{tags}/{'x' * 256}", headers=A, json={}), 400, "M_INVALID_PARAM")
        bad = f"{V3}/user/{me}/rooms/notaroom/tags/u.x"
        _err(c.put(bad, headers=A, json={}), 400, "M_INVALID_PARAM")
        _err(c.delete(bad, headers=A), 400, "M_INVALID_PARAM")
        assert c.get(tags, headers=A).json() == before


def test_tags_and_read_marker_seen_by_nio(server: RunningServer, alice) -> None:
    A, me = _auth(alice["access_token"]), _q(alice["user_id"])
    with server.client() as c:
        room = _room(c, alice)
        event_id = _send(c, alice, room, "hello")
        c.put(f"{V3}/user/{me}/rooms/{_q(room)}/tags/m.lowpriority", headers=A, json={"order": 0.3})

    async def scenario() -> None:
        client = nio.AsyncClient(server.base_url, alice["user_id"])
        client.access_token = alice["access_token"]
        client.user_id = alice["user_id"]
        client.device_id = alice["device_id"]
        try:
            resp = await client.room_read_markers(room, event_id, event_id)
            assert isinstance(resp, nio.RoomReadMarkersResponse), resp
            sync = await client.sync(timeout=0, full_state=True)
            assert isinstance(sync, nio.SyncResponse), sync
            events = sync.rooms.join[room].account_data
            tag = next(e for e in events if isinstance(e, nio.TagEvent))
            assert tag.tags == {"m.lowpriority": {"order": 0.3}}
            marker = next(e for e in events if isinstance(e, nio.FullyReadEvent))
            assert marker.event_id == event_id
        finally:
            await client.close()

    asyncio.run(scenario())


# --- ignoring users ------------------------------------------------------------------------


def test_ignoring_hides_messages_and_invites(server: RunningServer, alice, bob) -> None:
    A, B, me = _auth(alice["access_token"]), _auth(bob["access_token"]), _q(alice["user_id"])
    ignore_url = f"{V3}/user/{me}/account_data/m.ignored_user_list"
    with server.client() as c:
        room = _room(c, alice, preset="public_chat")
        assert c.post(f"{V3}/rooms/{_q(room)}/join", headers=B).status_code == 200
        _send(c, bob, room, "before")
        since = _sync(c, alice)["next_batch"]
        r = c.put(ignore_url, headers=A, json={"ignored_users": {bob["user_id"]: {}}})
        assert r.status_code == 200
        _send(c, bob, room, "while ignored")
        # A state event of bob's (his member event) is still sent.
        r = c.put(
            f"{V3}/rooms/{_q(room)}/state/m.room.member/{_q(bob['user_id'])}",
            headers=B,
            json={"membership": "join", "displayname": "Bobby"},
        )
        assert r.status_code == 200, r.text
        _send(c, alice, room, "mine")
        # An invite from bob to a new room is not shown.
        invite_room = _room(c, bob, invite=[alice["user_id"]])
        body = _sync(c, alice, since)
        assert _global_ad(body)["m.ignored_user_list"] == {"ignored_users": {bob["user_id"]: {}}}
        timeline = body["rooms"]["join"][room]["timeline"]["events"]
        bodies = [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"]
        assert bodies == ["mine"]
        # State events from an ignored user are still sent.
        assert any(
            e["type"] == "m.room.member" and e["content"].get("displayname") == "Bobby"
            for e in timeline
        )
        assert invite_room not in body["rooms"]["invite"]
        # An initial sync hides them too.
        full = _sync(c, alice)
        timeline = full["rooms"]["join"][room]["timeline"]["events"]
        senders = {e["sender"] for e in timeline if e["type"] == "m.room.message"}
        assert bob["user_id"] not in senders
        assert invite_room not in full["rooms"]["invite"]
        # Unignoring: new messages flow again (missed ones are not resent).
        since = full["next_batch"]
        assert c.put(ignore_url, headers=A, json={"ignored_users": {}}).status_code == 200
        _send(c, bob, room, "after")
        body = _sync(c, alice, since)
        timeline = body["rooms"]["join"][room]["timeline"]["events"]
        bodies = [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"]
        assert bodies == ["after"]
        assert invite_room in _sync(c, alice)["rooms"]["invite"]


# --- read markers --------------------------------------------------------------------------


def test_read_markers(server: RunningServer, alice, bob) -> None:
    A, B, me = _auth(alice["access_token"]), _auth(bob["access_token"]), _q(alice["user_id"])
    with server.client() as c:
        room = _room(c, alice)
        first = _send(c, alice, room, "one")
        second = _send(c, alice, room, "two")
        url = f"{V3}/rooms/{_q(room)}/read_markers"
        marker_url = f"{V3}/user/{me}/rooms/{_q(room)}/account_data/m.fully_read"
        since = _sync(c, alice)["next_batch"]
        assert c.post(url, headers=A, json={"m.fully_read": second}).json() == {}
        assert c.get(marker_url, headers=A).json() == {"event_id": second}
        body = _sync(c, alice, since)
        assert _room_ad(body, room) == {"m.fully_read": {"event_id": second}}
        # The marker only moves forward.
        assert c.post(url, headers=A, json={"m.fully_read": first}).status_code == 200
        assert c.get(marker_url, headers=A).json() == {"event_id": second}
        # m.read / m.read.private are receipts, as if sent to /receipt.
        since = _sync(c, alice)["next_batch"]
        r = c.post(url, headers=A, json={"m.read": second, "m.read.private": first})
        assert r.status_code == 200, r.text
        ephemeral = _sync(c, alice, since)["rooms"]["join"][room]["ephemeral"]["events"]
        receipts = [e["content"] for e in ephemeral if e["type"] == "m.receipt"]
        assert any(alice["user_id"] in r.get(second, {}).get("m.read", {}) for r in receipts)
        assert c.post(url, headers=A, json={}).status_code == 200
        # Errors.
        _err(c.post(url, json={"m.fully_read": second}), 401, "M_MISSING_TOKEN")
        _err(c.post(url, headers=B, json={"m.fully_read": second}), 403, "M_FORBIDDEN")
        _err(c.post(url, headers=A, json={"m.fully_read": "$nope"}), 404, "M_NOT_FOUND")
        _err(c.post(url, headers=A, json={"m.read": "$nope"}), 404, "M_NOT_FOUND")
        other_room = _room(c, alice)
        elsewhere = _send(c, alice, other_room, "elsewhere")
        _err(c.post(url, headers=A, json={"m.fully_read": elsewhere}), 404, "M_NOT_FOUND")
        _err(c.post(url, headers=A, json={"m.fully_read": 5}), 400, "M_BAD_JSON")
        _err(c.post(url, headers=A, json=["x"]), 400, "M_BAD_JSON")
        _err(
            c.post(f"{V3}/rooms/notaroom/read_markers", headers=A, json={"m.fully_read": second}),
            400,
            "M_INVALID_PARAM",
        )
        unknown = f"{V3}/rooms/{_q('!unknown:test.local')}/read_markers"
        _err(c.post(unknown, headers=A, json={"m.fully_read": second}), 403, "M_FORBIDDEN")
        _err(
            c.post(url, headers=A, json={"m.fully_read": "$nope", "m.read": second}),
            404,
            "M_NOT_FOUND",
        )
        assert c.get(marker_url, headers=A).json() == {"event_id": second}
        # Moving forward works.
        third = _send(c, alice, room, "three")
        assert c.post(url, headers=A, json={"m.fully_read": third}).status_code == 200
        assert c.get(marker_url, headers=A).json() == {"event_id": third}
