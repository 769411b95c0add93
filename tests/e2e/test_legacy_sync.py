"""The deprecated sync API through the real server: ``GET /events`` (long-poll, peeking),
``GET /initialSync``, ``GET /rooms/{roomId}/initialSync`` and ``GET /events/{eventId}``
(client-server API old_sync.yaml, room_initial_sync.yaml, peeking_events.yaml)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"
_names = itertools.count(1)
_txn = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Guests allowed, and no message rate limit (the tests send many messages)."""
    config = make_config(
        tmp_path_factory.mktemp("legacy"),
        allow_guest_access=True,
        rc_message={"per_second": 1000, "burst_count": 1000},
    )
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


class User:
    def __init__(self, server: RunningServer, c: httpx.Client, name: str | None = None) -> None:
        name = name or f"legacy{next(_names)}"
        self.c = c
        self.token = server.register(name)["access_token"]
        self.user_id = f"@{name}:{server.server_name}"
        self.h = {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, prefix: str = V3, **params: object) -> httpx.Response:
        return self.c.get(f"{prefix}{path}", headers=self.h, params=params)

    def ok(self, path: str, **params: object) -> dict[str, object]:
        r = self.get(path, **params)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def send(self, room_id: str, body: str) -> str:
        r = self.c.put(
            f"{V3}/rooms/{room_id}/send/m.room.message/t{next(_txn)}",
            headers=self.h,
            json={"msgtype": "m.text", "body": body},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["event_id"])

    def put(self, path: str, body: dict[str, object]) -> None:
        r = self.c.put(f"{V3}{path}", headers=self.h, json=body)
        assert r.status_code == 200, r.text

    def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        r = self.c.post(f"{V3}{path}", headers=self.h, json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def create_room(self, **body: object) -> str:
        return str(self.post("/createRoom", dict(body))["room_id"])


def _messages(events: list[dict[str, object]]) -> list[str]:
    return [
        str(e["content"]["body"])  # type: ignore[index]
        for e in events
        if e["type"] == "m.room.message"
    ]


def _room(body: dict[str, object], room_id: str) -> dict[str, object]:
    rooms = body["rooms"]
    assert isinstance(rooms, list)
    return next(r for r in rooms if r["room_id"] == room_id)


def test_initial_sync_then_events_stream(server: RunningServer) -> None:
    with server.client() as c:
        alice, bob = User(server, c), User(server, c)
        room = alice.create_room(preset="public_chat", name="Legacy")
        alice.put(f"/directory/list/room/{room}", {"visibility": "public"})
        c.post(f"{V3}/join/{room}", headers=bob.h)
        for i in range(3):
            alice.send(room, f"m{i}")
        alice.put(f"/user/{quote(alice.user_id)}/rooms/{room}/tags/work", {"order": 1})
        alice.put(f"/user/{quote(alice.user_id)}/account_data/my.type", {"v": "global"})
        last = alice.send(room, "m3")
        alice.post(f"/rooms/{room}/receipt/m.read/{quote(last)}", {})

        body = alice.ok("/initialSync", limit=2)
        entry = _room(body, room)
        assert entry["membership"] == "join"
        assert entry["visibility"] == "public"
        messages = entry["messages"]
        assert isinstance(messages, dict)
        assert _messages(messages["chunk"]) == ["m2", "m3"]  # oldest first, at most limit
        assert all(e["room_id"] == room for e in messages["chunk"])
        state_types = {e["type"] for e in entry["state"]}  # type: ignore[attr-defined]
        # The old "v1" event format: user_id beside sender.
        assert all(e["user_id"] == e["sender"] for e in entry["state"])  # type: ignore[attr-defined]
        assert {"m.room.create", "m.room.name", "m.room.member"} <= state_types
        assert {"type": "m.tag", "content": {"tags": {"work": {"order": 1}}}} in entry[
            "account_data"
        ]  # type: ignore[operator]
        assert {"type": "my.type", "content": {"v": "global"}} in body["account_data"]  # type: ignore[operator]
        receipts = [r for r in body["receipts"] if r["room_id"] == room]  # type: ignore[attr-defined]
        assert receipts
        assert last in receipts[0]["content"]
        own = [p for p in body["presence"] if p["content"]["user_id"] == alice.user_id]  # type: ignore[attr-defined]
        assert own
        assert own[0]["content"]["presence"] == "online"
        # The older messages are reachable from messages.start with /messages.
        older = alice.ok(f"/rooms/{room}/messages", dir="b", **{"from": messages["start"]})
        assert "m1" in _messages(older["chunk"])  # type: ignore[arg-type]
        assert alice.ok("/initialSync", limit=0)["rooms"][0]["messages"]["chunk"] == []  # type: ignore[index]

        # /events from the initial sync's end: only what happened since, then nothing.
        token = body["end"]
        sent = alice.send(room, "after")
        got = alice.ok("/events", timeout=0, **{"from": token})
        assert got["start"] == token
        assert [e["event_id"] for e in got["chunk"] if e["type"] == "m.room.message"] == [sent]  # type: ignore[attr-defined]
        again = alice.ok("/events", timeout=0, **{"from": got["end"]})
        assert again["chunk"] == []
        # The end token also works with /messages (forwards from it: nothing yet).
        fwd = alice.ok(f"/rooms/{room}/messages", dir="f", **{"from": got["end"]})
        assert fwd["chunk"] == []


def test_events_catch_up_in_order_with_limit(server: RunningServer) -> None:
    with server.client() as c:
        alice = User(server, c)
        room = alice.create_room()
        token = alice.ok("/events", timeout=0)["end"]
        sent = [alice.send(room, f"n{i}") for i in range(12)]
        seen: list[str] = []
        for _ in range(5):
            got = alice.ok("/events", timeout=0, limit=5, **{"from": token})
            assert len(got["chunk"]) <= 5  # type: ignore[arg-type]
            seen += [e["event_id"] for e in got["chunk"] if e["type"] == "m.room.message"]  # type: ignore[attr-defined]
            token = got["end"]
        assert seen == sent
        # The r0 prefix serves the same endpoint.
        r = alice.get("/events", prefix=R0, timeout=0, **{"from": token})
        assert r.status_code == 200
        assert r.json()["chunk"] == []


def test_events_long_poll_wakes_and_carries_ephemeral(server: RunningServer) -> None:
    with server.client() as c:
        alice, bob = User(server, c), User(server, c)
        room = alice.create_room(preset="public_chat")
        c.post(f"{V3}/join/{room}", headers=bob.h)
        token = alice.ok("/events", timeout=0)["end"]
        # Idle: a long-poll waits its whole timeout and answers with nothing.
        started = time.monotonic()
        idle = alice.ok("/events", timeout=800, **{"from": token})
        assert idle["chunk"] == []
        assert time.monotonic() - started >= 0.75
        token = idle["end"]

        sent: list[str] = []

        def send_later() -> None:
            time.sleep(0.5)
            with server.client() as c2:
                r = c2.put(
                    f"{V3}/rooms/{room}/send/m.room.message/late",
                    headers=bob.h,
                    json={"msgtype": "m.text", "body": "late"},
                )
                sent.append(r.json()["event_id"])

        t = threading.Thread(target=send_later)
        t.start()
        started = time.monotonic()
        woke = alice.ok("/events", timeout=20000, **{"from": token})
        t.join()
        assert time.monotonic() - started < 10
        assert [e["event_id"] for e in woke["chunk"]] == sent  # type: ignore[attr-defined]
        token = woke["end"]

        # Typing, receipts and account data come as events with their room_id.
        bob.put(f"/rooms/{room}/typing/{quote(bob.user_id)}", {"typing": True, "timeout": 30000})
        bob.post(f"/rooms/{room}/receipt/m.read/{quote(sent[0])}", {})
        alice.put(f"/user/{quote(alice.user_id)}/rooms/{room}/account_data/x.y", {"a": 1})
        alice.put(f"/user/{quote(alice.user_id)}/account_data/x.z", {"b": 2})
        chunk: list[dict[str, object]] = []
        for _ in range(5):
            got = alice.ok("/events", timeout=1000, **{"from": token})
            chunk += got["chunk"]  # type: ignore[arg-type]
            token = got["end"]
            types = {e["type"] for e in chunk}
            if {"m.typing", "m.receipt", "x.y", "x.z"} <= types:
                break
        by_type = {e["type"]: e for e in chunk}
        assert by_type["m.typing"]["room_id"] == room
        assert by_type["m.typing"]["content"] == {"user_ids": [bob.user_id]}
        assert by_type["m.receipt"]["room_id"] == room
        assert by_type["x.y"] == {"type": "x.y", "content": {"a": 1}, "room_id": room}
        assert by_type["x.z"] == {"type": "x.z", "content": {"b": 2}}


def test_archived_and_left_rooms(server: RunningServer) -> None:
    with server.client() as c:
        alice, bob = User(server, c), User(server, c)
        room = bob.create_room(preset="public_chat")
        c.post(f"{V3}/join/{room}", headers=alice.h)
        bob.put(f"/rooms/{room}/state/madeup.state", {"body": "S1 before"})
        bob.send(room, "M1 before")
        bob.send(room, "M2 before")
        r = c.post(f"{V3}/rooms/{room}/leave", headers=alice.h, json={})
        assert r.status_code == 200
        bob.send(room, "M3 after")
        bob.put(f"/rooms/{room}/state/madeup.state", {"body": "S2 after"})

        assert all(r["room_id"] != room for r in alice.ok("/initialSync")["rooms"])  # type: ignore[attr-defined]
        for snapshot in (
            _room(alice.ok("/initialSync", limit=3, archived="true"), room),
            alice.ok(f"/rooms/{room}/initialSync", limit=3),
        ):
            assert snapshot["membership"] == "leave"
            state = {e["type"]: e for e in snapshot["state"]}  # type: ignore[attr-defined]
            assert state["madeup.state"]["content"] == {"body": "S1 before"}
            chunk = snapshot["messages"]["chunk"]  # type: ignore[index]
            assert _messages(chunk) == ["M1 before", "M2 before"]
            assert chunk[-1]["type"] == "m.room.member"  # the leave ends it
        left = alice.ok(f"/rooms/{room}/initialSync")
        assert left["presence"] == []
        assert left["receipts"] == []
        # /events after the leave: nothing more of the room.
        token = left["messages"]["end"]  # type: ignore[index]
        bob.send(room, "M4 after")
        assert alice.ok("/events", timeout=0, **{"from": token})["chunk"] == []

        r = alice.get("/initialSync", limit="hello")
        assert r.status_code == 400
        assert r.json()["errcode"] == "M_INVALID_PARAM"
        r = alice.get("/initialSync", archived="yes")
        assert r.status_code == 400


def test_room_initial_sync_and_event_access(server: RunningServer) -> None:
    with server.client() as c:
        alice, eve = User(server, c), User(server, c)
        room = alice.create_room(preset="private_chat", topic="secret")
        event_id = alice.send(room, "private words")

        snap = alice.ok(f"/rooms/{room}/initialSync")
        assert snap["room_id"] == room
        assert snap["membership"] == "join"
        assert "private words" in _messages(snap["messages"]["chunk"])  # type: ignore[index]
        assert {"m.room.create", "m.room.topic"} <= {e["type"] for e in snap["state"]}  # type: ignore[attr-defined]
        assert [p["content"]["user_id"] for p in snap["presence"]] == [alice.user_id]  # type: ignore[attr-defined]
        assert alice.ok(f"/events/{event_id}")["content"]["body"] == "private words"  # type: ignore[index]

        # An outsider: refused everywhere, and the refusal changed nothing.
        r = eve.get(f"/rooms/{room}/initialSync")
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_FORBIDDEN"
        r = eve.get("/events", timeout=0, room_id=room)
        assert r.status_code == 403
        r = eve.get(f"/events/{event_id}")
        assert r.status_code == 404
        assert r.json()["errcode"] == "M_NOT_FOUND"
        assert eve.get("/events/$nosuchevent").status_code == 404
        assert all(r["room_id"] != room for r in eve.ok("/initialSync")["rooms"])  # type: ignore[attr-defined]
        members = alice.ok(f"/rooms/{room}/joined_members")["joined"]
        assert list(members) == [alice.user_id]  # type: ignore[call-overload]

        r = alice.get("/rooms/not-a-room/initialSync")
        assert r.status_code == 400
        for bad in ({"limit": "-2"}, {"limit": "x"}, {"timeout": "soon"}, {"from": "garbage"}):
            r = alice.get("/events", **bad)
            assert r.status_code == 400, bad
        r = c.get(f"{V3}/events")
        assert r.status_code == 401


def test_peeking_world_readable_room(server: RunningServer) -> None:
    with server.client() as c:
        alice, eve = User(server, c), User(server, c)
        guest = c.post(f"{V3}/register", params={"kind": "guest"}, json={})
        assert guest.status_code == 200, guest.text
        guest_h = {"Authorization": f"Bearer {guest.json()['access_token']}"}
        room = alice.create_room(preset="public_chat")
        alice.send(room, "before")
        alice.put(
            f"/rooms/{room}/state/m.room.history_visibility",
            {"history_visibility": "world_readable"},
        )
        alice.send(room, "public")

        for h in (eve.h, guest_h):
            r = c.get(f"{V3}/rooms/{room}/initialSync", headers=h)
            assert r.status_code == 200, r.text
            snap = r.json()
            assert "membership" not in snap  # a peeker is not a member
            chunk = snap["messages"]["chunk"]
            types = [e["type"] for e in chunk]
            assert types[:2] == ["m.room.history_visibility", "m.room.message"]
            assert "before" not in _messages(chunk)  # only world-readable history
            token = snap["messages"]["end"]
            sent = alice.send(room, "live")
            got = c.get(
                f"{V3}/events", headers=h, params={"room_id": room, "timeout": 0, "from": token}
            ).json()
            assert [e["event_id"] for e in got["chunk"] if e["type"] == "m.room.message"] == [sent]
            # The room's members' presence reaches the peeker, who shares no room with them.
            status = f"peeked {len(token)}-{time.monotonic()}"
            alice.put(
                f"/presence/{quote(alice.user_id)}/status",
                {"presence": "online", "status_msg": status},
            )
            got = c.get(
                f"{V3}/events",
                headers=h,
                params={"room_id": room, "timeout": 5000, "from": got["end"]},
            ).json()
            presence = [e for e in got["chunk"] if e["type"] == "m.presence"]
            assert [p["content"]["user_id"] for p in presence] == [alice.user_id]
            assert presence[0]["content"]["status_msg"] == status

        # A guest must name a room; nobody may peek into a room that is not world-readable.
        r = c.get(f"{V3}/events", headers=guest_h, params={"timeout": 0})
        assert r.status_code == 400
        private = alice.create_room()
        r = c.get(f"{V3}/events", headers=guest_h, params={"room_id": private, "timeout": 0})
        assert r.status_code == 403
        r = c.get(f"{V3}/initialSync", headers=guest_h)
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
