"""Typing, receipts and presence through the real server: raw HTTP for exact answers,
matrix-nio for a real client's view."""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import quote

import httpx
import nio
import pytest

from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def trio_users(server: RunningServer, new_user: str):
    """Alice and Bob share a room; Carol is in none of theirs."""
    a = server.register(new_user + "a")
    b = server.register(new_user + "b")
    c = server.register(new_user + "c")
    A = _auth(a["access_token"])
    B = _auth(b["access_token"])
    with server.client() as http:
        room = http.post(f"{V3}/createRoom", headers=A, json={"preset": "public_chat"}).json()[
            "room_id"
        ]
        assert http.post(f"{V3}/join/{room}", headers=B).status_code == 200
    return a, b, c, room


def _send(http: httpx.Client, headers, room: str, body: str, **content: object) -> str:
    r = http.put(
        f"{V3}/rooms/{room}/send/m.room.message/{body}{time.monotonic_ns()}",
        headers=headers,
        json={"msgtype": "m.text", "body": body, **content},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


def _ephemeral(body: dict, room: str, kind: str) -> list[dict]:
    entry = body["rooms"]["join"].get(room, {})
    return [e for e in entry.get("ephemeral", {}).get("events", []) if e["type"] == kind]


def _receipts(body: dict, room: str) -> dict[tuple[str, str, str], dict]:
    """(event, type, user) -> receipt, over every m.receipt event of the room."""
    found = {}
    for event in _ephemeral(body, room, "m.receipt"):
        for event_id, types in event["content"].items():
            for rtype, users in types.items():
                for user, receipt in users.items():
                    found[(event_id, rtype, user)] = receipt
    return found


def _error(r: httpx.Response, status: int, errcode: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["errcode"] == errcode, r.text


# --- typing ----------------------------------------------------------------------------


def test_typing_reaches_the_other_member(server: RunningServer, trio_users) -> None:
    a, b, _, room = trio_users
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as http:
        since = http.get(f"{V3}/sync", headers=B).json()["next_batch"]
        url = f"{V3}/rooms/{room}/typing/{quote(a['user_id'])}"
        r = http.put(url, headers=A, json={"typing": True, "timeout": 20000})
        assert r.status_code == 200, r.text
        assert r.json() == {}
        body = http.get(f"{V3}/sync", headers=B, params={"since": since}).json()
        assert _ephemeral(body, room, "m.typing") == [
            {"type": "m.typing", "content": {"user_ids": [a["user_id"]]}}
        ]
        # A fresh initial sync shows who types now.
        initial = http.get(f"{V3}/sync", headers=B).json()
        assert _ephemeral(initial, room, "m.typing")[0]["content"]["user_ids"] == [a["user_id"]]
        since = body["next_batch"]
        assert http.put(url, headers=A, json={"typing": False}).status_code == 200
        body = http.get(f"{V3}/sync", headers=B, params={"since": since}).json()
        assert _ephemeral(body, room, "m.typing")[0]["content"] == {"user_ids": []}
        quiet = http.get(f"{V3}/sync", headers=B, params={"since": body["next_batch"]}).json()
        assert _ephemeral(quiet, room, "m.typing") == []
        # A client starting from scratch after "stopped" hears that nobody types (as
        # Synapse says it; SyTest 20typing "Typing can be explicitly stopped").
        fresh = http.get(f"{V3}/sync", headers=B).json()
        assert _ephemeral(fresh, room, "m.typing") == [
            {"type": "m.typing", "content": {"user_ids": []}}
        ]


def test_leaving_stops_typing_at_once(server: RunningServer, trio_users) -> None:
    a, b, _, room = trio_users
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as http:
        url = f"{V3}/rooms/{room}/typing/{quote(b['user_id'])}"
        assert http.put(url, headers=B, json={"typing": True, "timeout": 30000}).status_code == 200
        body = http.get(f"{V3}/sync", headers=A).json()
        assert _ephemeral(body, room, "m.typing")[0]["content"] == {"user_ids": [b["user_id"]]}
        assert http.post(f"{V3}/rooms/{room}/leave", headers=B, json={}).status_code == 200
        later = http.get(
            f"{V3}/sync", headers=A, params={"since": body["next_batch"], "timeout": "0"}
        ).json()
        assert _ephemeral(later, room, "m.typing") == [
            {"type": "m.typing", "content": {"user_ids": []}}
        ]


def test_typing_wakes_a_long_poll(server: RunningServer, trio_users) -> None:
    a, b, _, room = trio_users
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as http:
        since = http.get(f"{V3}/sync", headers=B).json()["next_batch"]
    result: dict[str, object] = {}

    def wait() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as c2:
            started = time.perf_counter()
            r = c2.get(
                f"{V3}/sync",
                headers=B,
                params={"since": since, "timeout": 20000, "set_presence": "offline"},
            )
            result["elapsed"] = time.perf_counter() - started
            result["body"] = r.json()

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(1.0)
    with server.client() as http:
        http.put(
            f"{V3}/rooms/{room}/typing/{quote(a['user_id'])}",
            headers=A,
            json={"typing": True, "timeout": 5000},
        )
    thread.join(30)
    assert result["elapsed"] < 5, result
    body = result["body"]
    assert isinstance(body, dict)
    assert _ephemeral(body, room, "m.typing")[0]["content"]["user_ids"] == [a["user_id"]]


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        ({}, 400, "M_MISSING_PARAM"),
        ({"typing": "yes"}, 400, "M_BAD_JSON"),
        ({"typing": True, "timeout": "30000"}, 400, "M_BAD_JSON"),
        ({"typing": True, "timeout": 1.5}, 400, "M_BAD_JSON"),
        ({"typing": True, "timeout": True}, 400, "M_BAD_JSON"),
        ({"typing": True, "timeout": -1}, 400, "M_INVALID_PARAM"),
    ],
)
def test_typing_bad_bodies(server: RunningServer, trio_users, body, status, errcode) -> None:
    a, _, _, room = trio_users
    with server.client() as http:
        r = http.put(
            f"{V3}/rooms/{room}/typing/{quote(a['user_id'])}",
            headers=_auth(a["access_token"]),
            json=body,
        )
    _error(r, status, errcode)


def test_typing_errors(server: RunningServer, trio_users) -> None:
    a, b, c, room = trio_users
    A, C = _auth(a["access_token"]), _auth(c["access_token"])
    with server.client() as http:
        url = f"{V3}/rooms/{room}/typing/"
        ok = {"typing": True, "timeout": 1000}
        _error(http.put(url + quote(b["user_id"]), headers=A, json=ok), 403, "M_FORBIDDEN")
        _error(http.put(url + quote(c["user_id"]), headers=C, json=ok), 403, "M_FORBIDDEN")
        _error(http.put(url + quote(a["user_id"]), json=ok), 401, "M_MISSING_TOKEN")
        _error(http.put(url + "nobody", headers=A, json=ok), 400, "M_INVALID_PARAM")
        _error(
            http.put(f"{V3}/rooms/notaroom/typing/{quote(a['user_id'])}", headers=A, json=ok),
            400,
            "M_INVALID_PARAM",
        )
        _error(http.put(url + quote(a["user_id"]), headers=A, content=b"{nope"), 400, "M_NOT_JSON")
        unknown = f"{V3}/rooms/!unknown:{server.server_name}/typing/{quote(a['user_id'])}"
        _error(http.put(unknown, headers=A, json=ok), 403, "M_FORBIDDEN")


# --- receipts --------------------------------------------------------------------------


def test_receipts_public_and_private(server: RunningServer, trio_users) -> None:
    a, b, _, room = trio_users
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as http:
        first = _send(http, A, room, "one")
        second = _send(http, A, room, "two")
        since_a = http.get(f"{V3}/sync", headers=A).json()["next_batch"]
        since_b = http.get(f"{V3}/sync", headers=B).json()["next_batch"]
        r = http.post(f"{V3}/rooms/{room}/receipt/m.read/{first}", headers=B, json={})
        assert r.status_code == 200, r.text
        assert r.json() == {}
        r = http.post(f"{V3}/rooms/{room}/receipt/m.read.private/{second}", headers=B, json={})
        assert r.status_code == 200, r.text
        seen_by_a = _receipts(
            http.get(f"{V3}/sync", headers=A, params={"since": since_a}).json(), room
        )
        assert set(seen_by_a) == {(first, "m.read", b["user_id"])}
        assert isinstance(seen_by_a[(first, "m.read", b["user_id"])]["ts"], int)
        assert "thread_id" not in seen_by_a[(first, "m.read", b["user_id"])]
        seen_by_b = _receipts(
            http.get(f"{V3}/sync", headers=B, params={"since": since_b}).json(), room
        )
        assert set(seen_by_b) == {
            (first, "m.read", b["user_id"]),
            (second, "m.read.private", b["user_id"]),
        }
        # Initial syncs carry the current receipts, private ones only to their owner.
        assert set(_receipts(http.get(f"{V3}/sync", headers=A).json(), room)) == {
            (first, "m.read", b["user_id"])
        }
        assert (second, "m.read.private", b["user_id"]) in _receipts(
            http.get(f"{V3}/sync", headers=B).json(), room
        )
        # A receipt for an earlier event changes nothing.
        since_a = http.get(f"{V3}/sync", headers=A).json()["next_batch"]
        http.post(f"{V3}/rooms/{room}/receipt/m.read/{second}", headers=B, json={})
        again = http.post(f"{V3}/rooms/{room}/receipt/m.read/{first}", headers=B)
        assert again.status_code == 200, again.text
        later = _receipts(http.get(f"{V3}/sync", headers=A, params={"since": since_a}).json(), room)
        assert set(later) == {(second, "m.read", b["user_id"])}


def test_threaded_receipts(server: RunningServer, trio_users) -> None:
    a, b, _, room = trio_users
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as http:
        root = _send(http, A, room, "root")
        in_thread = _send(
            http, A, room, "reply", **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
        )
        edit = _send(
            http,
            A,
            room,
            "edit",
            **{"m.relates_to": {"rel_type": "m.replace", "event_id": in_thread}},
        )
        since = http.get(f"{V3}/sync", headers=A).json()["next_batch"]

        def receipt(event_id: str, thread_id: object) -> httpx.Response:
            return http.post(
                f"{V3}/rooms/{room}/receipt/m.read/{event_id}",
                headers=B,
                json={"thread_id": thread_id},
            )

        assert receipt(in_thread, root).status_code == 200
        assert receipt(edit, root).status_code == 200  # in the thread through its relation
        assert receipt(root, "main").status_code == 200
        assert receipt(root, root).status_code == 200  # a thread's root belongs to it too
        unthreaded = http.post(f"{V3}/rooms/{room}/receipt/m.read/{root}", headers=B, json={})
        assert unthreaded.status_code == 200
        _error(receipt(in_thread, "main"), 400, "M_INVALID_PARAM")
        _error(receipt(root, in_thread), 400, "M_INVALID_PARAM")
        _error(receipt(in_thread, in_thread), 400, "M_INVALID_PARAM")  # not a root
        _error(receipt(root, ""), 400, "M_INVALID_PARAM")
        _error(receipt(root, 5), 400, "M_INVALID_PARAM")
        body = http.get(f"{V3}/sync", headers=A, params={"since": since}).json()
        events = _ephemeral(body, room, "m.receipt")
        assert len(events) == 3  # one per thread: unthreaded, main and the thread
        mine = [
            (event_id, receipt.get("thread_id"))
            for e in events
            for event_id, types in e["content"].items()
            for receipt in types["m.read"].values()
        ]
        assert sorted(mine, key=str) == sorted(
            [(edit, root), (root, "main"), (root, None)], key=str
        )


def test_fully_read_through_the_receipt_endpoint(server: RunningServer, trio_users) -> None:
    a, b, _, room = trio_users
    B = _auth(b["access_token"])
    with server.client() as http:
        event_id = _send(http, _auth(a["access_token"]), room, "read me")
        r = http.post(f"{V3}/rooms/{room}/receipt/m.fully_read/{event_id}", headers=B, json={})
        assert r.status_code == 200, r.text
        body = http.get(f"{V3}/sync", headers=B).json()
        account_data = body["rooms"]["join"][room]["account_data"]["events"]
        assert {"type": "m.fully_read", "content": {"event_id": event_id}} in account_data
        assert _receipts(body, room).get((event_id, "m.fully_read", b["user_id"])) is None
        _error(
            http.post(
                f"{V3}/rooms/{room}/receipt/m.fully_read/{event_id}",
                headers=B,
                json={"thread_id": "main"},
            ),
            400,
            "M_INVALID_PARAM",
        )


def test_receipt_errors(server: RunningServer, trio_users) -> None:
    a, b, c, room = trio_users
    A, B, C = (_auth(u["access_token"]) for u in (a, b, c))
    with server.client() as http:
        event_id = _send(http, A, room, "x")
        other_room = http.post(f"{V3}/createRoom", headers=C, json={}).json()["room_id"]
        elsewhere = _send(http, C, other_room, "elsewhere")
        url = f"{V3}/rooms/{room}/receipt"
        _error(http.post(f"{url}/m.read/{event_id}", headers=C, json={}), 403, "M_FORBIDDEN")
        _error(http.post(f"{url}/m.read/{event_id}", json={}), 401, "M_MISSING_TOKEN")
        _error(http.post(f"{url}/m.unknown/{event_id}", headers=B, json={}), 400, "M_INVALID_PARAM")
        _error(http.post(f"{url}/m.read/$nope", headers=B, json={}), 404, "M_NOT_FOUND")
        _error(http.post(f"{url}/m.read/{elsewhere}", headers=B, json={}), 404, "M_NOT_FOUND")
        _error(http.post(f"{url}/m.read/{event_id}", headers=B, content=b"["), 400, "M_NOT_JSON")
        _error(http.post(f"{url}/m.read/{event_id}", headers=B, json=[1]), 400, "M_BAD_JSON")
        _error(
            http.post(f"{V3}/rooms/bad/receipt/m.read/{event_id}", headers=B, json={}),
            400,
            "M_INVALID_PARAM",
        )
        # Nothing of the above was stored.
        assert _receipts(http.get(f"{V3}/sync", headers=A).json(), room) == {}


def test_receipt_before_joining_is_not_visible(server: RunningServer, new_user: str) -> None:
    """Events from before a user joined a room with "joined" history are not theirs to
    acknowledge."""
    a = server.register(new_user + "h")
    b = server.register(new_user + "i")
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as http:
        room = http.post(
            f"{V3}/createRoom",
            headers=A,
            json={
                "preset": "public_chat",
                "initial_state": [
                    {
                        "type": "m.room.history_visibility",
                        "state_key": "",
                        "content": {"history_visibility": "joined"},
                    }
                ],
            },
        ).json()["room_id"]
        hidden = _send(http, A, room, "before")
        http.post(f"{V3}/join/{room}", headers=B)
        _error(
            http.post(f"{V3}/rooms/{room}/receipt/m.read/{hidden}", headers=B, json={}),
            404,
            "M_NOT_FOUND",
        )


# --- presence --------------------------------------------------------------------------


def test_presence_set_get_and_sync(server: RunningServer, trio_users) -> None:
    a, b, c, _ = trio_users
    A, B, C = (_auth(u["access_token"]) for u in (a, b, c))
    url = f"{V3}/presence/{quote(a['user_id'])}/status"
    with server.client() as http:
        since = http.get(f"{V3}/sync", headers=B, params={"set_presence": "offline"}).json()[
            "next_batch"
        ]
        r = http.put(url, headers=A, json={"presence": "online", "status_msg": "at lunch"})
        assert r.status_code == 200, r.text
        assert r.json() == {}
        got = http.get(url, headers=B)
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["presence"] == "online"
        assert body["status_msg"] == "at lunch"
        assert body["currently_active"] is True
        assert 0 <= body["last_active_ago"] < 10_000
        assert http.get(url, headers=A).json()["presence"] == "online"
        _error(http.get(url, headers=C), 403, "M_FORBIDDEN")
        synced = http.get(
            f"{V3}/sync", headers=B, params={"since": since, "set_presence": "offline"}
        ).json()
        events = [e for e in synced["presence"]["events"] if e["sender"] == a["user_id"]]
        assert len(events) == 1
        assert events[0]["type"] == "m.presence"
        assert events[0]["content"]["presence"] == "online"
        assert events[0]["content"]["status_msg"] == "at lunch"
        # Carol shares no room with Alice: she never hears of her.
        theirs = http.get(f"{V3}/sync", headers=C).json()["presence"]["events"]
        assert a["user_id"] not in {e["sender"] for e in theirs}
        # set_presence=unavailable on a sync marks the user idle.
        http.get(f"{V3}/sync", headers=A, params={"set_presence": "unavailable"})
        assert http.get(url, headers=B).json()["presence"] == "unavailable"
        http.put(url, headers=A, json={"presence": "offline"})
        gone = http.get(url, headers=B).json()
        assert gone["presence"] == "offline"
        assert set(gone) == {"presence", "last_active_ago"}  # status cleared, not active


def test_sync_marks_the_user_online(server: RunningServer, trio_users) -> None:
    a, b, _, _ = trio_users
    A, B = _auth(a["access_token"]), _auth(b["access_token"])
    with server.client() as http:
        url = f"{V3}/presence/{quote(a['user_id'])}/status"
        assert http.get(url, headers=B).json() == {"presence": "offline"}
        http.get(f"{V3}/sync", headers=A)
        assert http.get(url, headers=B).json()["presence"] == "online"


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({}, "M_MISSING_PARAM"),
        ({"presence": "busy"}, "M_INVALID_PARAM"),
        ({"presence": 1}, "M_BAD_JSON"),
        ({"presence": "online", "status_msg": 5}, "M_BAD_JSON"),
        ({"presence": "online", "status_msg": "x" * 2000}, "M_INVALID_PARAM"),
    ],
)
def test_presence_bad_bodies(server: RunningServer, new_user: str, body, errcode) -> None:
    a = server.register(new_user)
    with server.client() as http:
        r = http.put(
            f"{V3}/presence/{quote(a['user_id'])}/status",
            headers=_auth(a["access_token"]),
            json=body,
        )
    _error(r, 400, errcode)


def test_presence_errors(server: RunningServer, trio_users) -> None:
    a, b, _, _ = trio_users
    A = _auth(a["access_token"])
    with server.client() as http:
        other = f"{V3}/presence/{quote(b['user_id'])}/status"
        _error(http.put(other, headers=A, json={"presence": "online"}), 403, "M_FORBIDDEN")
        _error(http.get(f"{V3}/presence/nobody/status", headers=A), 400, "M_INVALID_PARAM")
        _error(http.get(other), 401, "M_MISSING_TOKEN")
        _error(
            http.put(f"{V3}/presence/{quote(a['user_id'])}/status", headers=A, content=b"x"),
            400,
            "M_NOT_JSON",
        )


def test_presence_disabled(tmp_path) -> None:
    config = make_config(tmp_path, presence={"enabled": False})
    with running_server(config) as s, s.client() as http:
        a = s.register("quiet")
        b = s.register("other")
        A, B = _auth(a["access_token"]), _auth(b["access_token"])
        room = http.post(f"{V3}/createRoom", headers=A, json={"preset": "public_chat"}).json()[
            "room_id"
        ]
        http.post(f"{V3}/join/{room}", headers=B)
        url = f"{V3}/presence/{quote(a['user_id'])}/status"
        assert http.put(url, headers=A, json={"presence": "online"}).status_code == 200
        _error(http.put(url, headers=A, json={"presence": "busy"}), 400, "M_INVALID_PARAM")
        assert http.get(url, headers=B).json() == {"presence": "offline"}
        assert http.get(url, headers=A).json() == {"presence": "offline"}
        assert http.get(f"{V3}/sync", headers=A).json()["presence"]["events"] == []
        assert http.get(f"{V3}/sync", headers=B).json()["presence"]["events"] == []
    assert "Traceback" not in s.log_text()


# --- a real client ---------------------------------------------------------------------


def test_nio_sees_typing_and_receipts(server: RunningServer, new_user: str) -> None:
    server.register(new_user + "x", "pw-x")
    server.register(new_user + "y", "pw-y")
    ux, uy = f"@{new_user}x:{server.server_name}", f"@{new_user}y:{server.server_name}"

    async def scenario() -> None:
        x = nio.AsyncClient(server.base_url, ux)
        y = nio.AsyncClient(server.base_url, uy)
        try:
            assert isinstance(await x.login("pw-x"), nio.LoginResponse)
            assert isinstance(await y.login("pw-y"), nio.LoginResponse)
            created = await x.room_create(name="typing room", invite=[uy])
            assert isinstance(created, nio.RoomCreateResponse), created
            room_id = created.room_id
            await y.sync(timeout=0)
            assert isinstance(await y.join(room_id), nio.JoinResponse)
            sent = await y.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": "read this"}
            )
            assert isinstance(sent, nio.RoomSendResponse), sent
            await x.sync(timeout=0)
            typed = await x.room_typing(room_id, typing_state=True, timeout=20000)
            assert isinstance(typed, nio.RoomTypingResponse), typed
            marked = await x.update_receipt_marker(room_id, sent.event_id, thread_id=None)
            assert isinstance(marked, nio.UpdateReceiptMarkerResponse), marked
            got = await y.sync(timeout=5000, since=y.next_batch)
            assert isinstance(got, nio.SyncResponse), got
            ephemeral = got.rooms.join[room_id].ephemeral
            assert any(
                isinstance(e, nio.TypingNoticeEvent) and e.users == [ux] for e in ephemeral
            ), ephemeral
            room = y.rooms[room_id]
            assert room.typing_users == [ux]
            assert room.read_receipts[ux].event_id == sent.event_id
            threaded = await x.update_receipt_marker(room_id, sent.event_id)  # thread "main"
            assert isinstance(threaded, nio.UpdateReceiptMarkerResponse), threaded
            await y.sync(timeout=5000, since=y.next_batch)
            assert room.threaded_read_receipts[ux]["main"].event_id == sent.event_id
            stopped = await x.room_typing(room_id, typing_state=False)
            assert isinstance(stopped, nio.RoomTypingResponse)
            await y.sync(timeout=5000, since=y.next_batch)
            assert room.typing_users == []
        finally:
            await x.close()
            await y.close()

    asyncio.run(scenario())
