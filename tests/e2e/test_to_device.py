"""Send-to-device messaging through the real server: raw HTTP for exact answers and
/sync behaviour, matrix-nio as a real client sending and receiving."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import nio
import pytest
from nio.event_builders import ToDeviceMessage

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"
PASSWORD = "correct horse"


class Device:
    """One logged-in device of a user, with a raw HTTP client."""

    def __init__(self, server: RunningServer, user_id: str, token: str, device_id: str) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.http = httpx.Client(
            base_url=server.base_url, timeout=30.0, headers={"Authorization": f"Bearer {token}"}
        )
        self._txn = 0

    def send(self, messages: dict[str, Any], etype: str = "m.test", txn: str | None = None):
        if txn is None:
            self._txn += 1
            txn = f"t{self._txn}-{time.monotonic_ns()}"
        return self.http.put(f"{V3}/sendToDevice/{etype}/{txn}", json={"messages": messages})

    def sync(self, since: str | None = None, timeout: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"timeout": timeout}
        if since:
            params["since"] = since
        r = self.http.get(f"{V3}/sync", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())


def _events(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body["to_device"]["events"])


@pytest.fixture
def make(server: RunningServer, new_user: str) -> Iterator[Any]:
    made: list[Device] = []

    def register(suffix: str) -> Device:
        info = server.register(new_user + suffix)
        device = Device(server, info["user_id"], info["access_token"], info["device_id"])
        made.append(device)
        return device

    def login(user: Device, device_id: str | None = None) -> Device:
        extra = {"device_id": device_id} if device_id else {}
        r = server.login(user.user_id, **extra)
        assert r.status_code == 200, r.text
        body = r.json()
        device = Device(server, user.user_id, body["access_token"], body["device_id"])
        made.append(device)
        return device

    yield register, login
    for device in made:
        device.http.close()


def test_delivered_until_acknowledged(make: Any) -> None:
    register, _ = make
    alice, bob = register("a"), register("b")
    start = bob.sync()
    assert _events(start) == []
    r = alice.send({bob.user_id: {bob.device_id: {"secret": 1}}}, etype="m.room_key_request")
    assert r.status_code == 200, r.text
    assert r.json() == {}
    first = bob.sync(start["next_batch"])
    expected = [{"sender": alice.user_id, "type": "m.room_key_request", "content": {"secret": 1}}]
    assert _events(first) == expected
    # The client lost that response and retries with its old token: same messages again.
    retry = bob.sync(start["next_batch"])
    assert _events(retry) == expected
    # Syncing from the response's token acknowledges them: they are gone for good.
    after = bob.sync(retry["next_batch"])
    assert _events(after) == []
    assert _events(bob.sync(start["next_batch"])) == []
    # An initial sync of another device of bob's sees nothing addressed to bob's first.
    assert _events(bob.sync()) == []


def test_star_fans_out_to_every_device_and_explicit_wins(make: Any) -> None:
    register, login = make
    alice, bob = register("a"), register("b")
    bob2 = login(bob)
    r = alice.send(
        {
            bob.user_id: {"*": {"to": "all"}, bob2.device_id: {"to": "two"}},
            "@nobody:test.local": {"*": {}},
            f"{bob.user_id}": {"*": {"to": "all"}, bob2.device_id: {"to": "two"}, "GONE": {}},
        }
    )
    assert r.status_code == 200, r.text
    assert [e["content"] for e in _events(bob.sync())] == [{"to": "all"}]
    assert [e["content"] for e in _events(bob2.sync())] == [{"to": "two"}]
    # The sender's own devices get nothing.
    assert _events(alice.sync()) == []


def test_same_txn_is_idempotent(make: Any) -> None:
    register, _ = make
    alice, bob = register("a"), register("b")
    for _ in range(3):
        r = alice.send({bob.user_id: {bob.device_id: {"n": 1}}}, txn="same")
        assert r.status_code == 200, r.text
    # Another event type with the same transaction ID is another request.
    assert (
        alice.send({bob.user_id: {bob.device_id: {"n": 2}}}, "m.other", txn="same").status_code
        == 200
    )
    events = _events(bob.sync())
    assert [(e["type"], e["content"]) for e in events] == [
        ("m.test", {"n": 1}),
        ("m.other", {"n": 2}),
    ]


def test_bounded_inbox_and_batches_of_100(server: RunningServer, make: Any) -> None:
    register, _ = make
    alice, bob = register("a"), register("b")
    start = bob.sync()
    for i in range(1005):
        r = alice.send({bob.user_id: {bob.device_id: {"i": i}}})
        assert r.status_code == 200, r.text
    assert "dropped 1 oldest message(s)" in server.log_text()
    since = start["next_batch"]
    received: list[int] = []
    for _ in range(10):
        body = bob.sync(since)
        events = _events(body)
        assert len(events) == 100
        received.extend(e["content"]["i"] for e in events)
        since = body["next_batch"]
    assert received == list(range(5, 1005))
    assert _events(bob.sync(since)) == []


def test_deleting_a_device_deletes_its_inbox(make: Any) -> None:
    register, login = make
    alice, bob = register("a"), register("b")
    bob2 = login(bob)
    assert alice.send({bob.user_id: {"*": {"x": 1}}}).status_code == 200
    first = bob2.http.request("DELETE", f"{V3}/devices/{bob2.device_id}", json={})
    assert first.status_code == 401, first.text
    r = bob.http.request(
        "DELETE",
        f"{V3}/devices/{bob2.device_id}",
        json={
            "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": bob.user_id},
                "password": PASSWORD,
                "session": first.json()["session"],
            }
        },
    )
    assert r.status_code == 200, r.text
    again = login(bob, bob2.device_id)
    assert _events(again.sync()) == []
    assert [e["content"] for e in _events(bob.sync())] == [{"x": 1}]


def test_long_poll_wakes_for_a_message(make: Any) -> None:
    register, _ = make
    alice, bob = register("a"), register("b")
    since = bob.sync()["next_batch"]
    result: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        result["body"] = bob.sync(since, timeout=20000)
        result["took"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    assert alice.send({bob.user_id: {bob.device_id: {"wake": True}}}).status_code == 200
    thread.join(30)
    assert result["took"] < 10
    assert [e["content"] for e in _events(result["body"])] == [{"wake": True}]


def test_remote_users_go_to_the_federation_outbox(server: RunningServer, make: Any) -> None:
    """A message for another server's user is stored for that server (the federation
    sender's outbox, kept across restarts until that server accepts it) before the
    client gets its 200."""
    register, _ = make
    alice = register("a")
    r = alice.send({"@carol:elsewhere.example": {"*": {"k": 1}}}, etype="m.remote.check")
    assert r.status_code == 200, r.text
    db = server.config_path.parent / "data" / "homeserver.db"
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT destination, edu_type, content FROM federation_edu_outbox"
        ).fetchall()
    finally:
        conn.close()
    assert len(rows) == 1, rows
    destination, edu_type, content = rows[0]
    assert (destination, edu_type) == ("elsewhere.example", "m.direct_to_device")
    parsed = json.loads(content)
    assert parsed["sender"] == alice.user_id
    assert parsed["type"] == "m.remote.check"
    assert parsed["messages"] == {"@carol:elsewhere.example": {"*": {"k": 1}}}


def test_errors(server: RunningServer, make: Any) -> None:
    register, _ = make
    alice, bob = register("a"), register("b")
    since = bob.sync()["next_batch"]
    path = f"{V3}/sendToDevice/m.test/e1"
    cases: list[tuple[object, int, str]] = [
        ({}, 400, "M_MISSING_PARAM"),
        ({"messages": []}, 400, "M_BAD_JSON"),
        ({"messages": {"bob": {"D": {}}}}, 400, "M_INVALID_PARAM"),
        ({"messages": {bob.user_id: "x"}}, 400, "M_BAD_JSON"),
        ({"messages": {bob.user_id: {bob.device_id: [1]}}}, 400, "M_BAD_JSON"),
        (
            {"messages": {bob.user_id: {bob.device_id: {"x": "a" * 70_000}}}},
            413,
            "M_TOO_LARGE",
        ),
        ([], 400, "M_BAD_JSON"),
    ]
    for body, status, errcode in cases:
        r = alice.http.put(path, json=body)
        assert (r.status_code, r.json()["errcode"]) == (status, errcode), (body, r.text)
    r = alice.http.put(path, content=b"not json")
    assert (r.status_code, r.json()["errcode"]) == (400, "M_NOT_JSON")
    with server.client() as anon:
        r = anon.put(path, json={"messages": {}})
        assert (r.status_code, r.json()["errcode"]) == (401, "M_MISSING_TOKEN")
    # Nothing was sent by any of those, and the transaction ID is still free.
    assert _events(bob.sync(since)) == []
    assert alice.send({bob.user_id: {bob.device_id: {"ok": 1}}}, txn="e1").status_code == 200
    assert [e["content"] for e in _events(bob.sync(since))] == [{"ok": 1}]
    # r0 works too.
    r = alice.http.put("/_matrix/client/r0/sendToDevice/m.test/r0", json={"messages": {}})
    assert r.status_code == 200, r.text


def test_nio_to_device_between_two_devices(server: RunningServer, new_user: str) -> None:
    alice_id = server.register(new_user + "na")["user_id"]
    bob_id = server.register(new_user + "nb")["user_id"]

    async def scenario() -> None:
        alice = nio.AsyncClient(server.base_url, alice_id)
        bob = nio.AsyncClient(server.base_url, bob_id)
        try:
            assert isinstance(
                await alice.login(PASSWORD, device_name="alice nio"), nio.LoginResponse
            )
            assert isinstance(await bob.login(PASSWORD, device_name="bob nio"), nio.LoginResponse)
            first = await bob.sync(timeout=0)
            assert isinstance(first, nio.SyncResponse), first
            message = ToDeviceMessage("org.example.ping", bob_id, bob.device_id, {"n": 42})
            sent = await alice.to_device(message, tx_id="nio-1")
            assert isinstance(sent, nio.ToDeviceResponse), sent
            got = await bob.sync(timeout=5000, since=first.next_batch)
            assert isinstance(got, nio.SyncResponse), got
            events = [e for e in got.to_device_events if isinstance(e, nio.UnknownToDeviceEvent)]
            assert [(e.type, e.sender, e.source["content"]) for e in events] == [
                ("org.example.ping", alice_id, {"n": 42})
            ]
            later = await bob.sync(timeout=0, since=got.next_batch)
            assert isinstance(later, nio.SyncResponse), later
            assert later.to_device_events == []
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(scenario())
