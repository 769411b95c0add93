"""Interop with a real Synapse: a Synapse user joins a room that lives on pocketserver,
and messages, typing and read receipts cross both ways.

Synapse runs on 127.0.0.1, pocketserver on 127.0.0.2, both named by IP literal and
port, both trusting one test CA. What this exercises end to end:

- the resident side of a join (``make_join`` / ``v2/send_join``, the state and auth
  chain streamed back), which Synapse checks event by event;
- our server keys and X-Matrix signatures, checked by Synapse, and Synapse's, checked
  by our keyring (fetched over TLS from Synapse);
- our federation sender (``PUT /send`` to Synapse, durable queue) and our inbound
  transactions (staged PDUs processed through the room writer, EDUs applied).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.federation.conftest import pocket_tls_config
from tests.federation.synapse_peer import SynapsePeer, TestCA
from tests.harness import RunningServer, running_server

WAIT_S = 45.0
_clients: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


class Client:
    """A logged-in client of either server."""

    def __init__(self, http: httpx.Client, token: str, user_id: str) -> None:
        self.http = http
        _clients.append(http)
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.user_id = user_id
        self.since: str | None = None
        self._txn = 0

    def call(self, method: str, path: str, body: object = None, **params: Any) -> Any:
        r = self.http.request(method, "/_matrix/client/v3" + path, json=body, params=params or None)
        assert r.status_code == 200, (method, path, r.status_code, r.text)
        return r.json()

    def send(self, room_id: str, body: str) -> str:
        self._txn += 1
        answer = self.call(
            "PUT",
            f"/rooms/{quote(room_id)}/send/m.room.message/t{self._txn}",
            {"msgtype": "m.text", "body": body},
        )
        return str(answer["event_id"])

    def wait_for(
        self, found: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = WAIT_S
    ) -> dict[str, Any]:
        """Long-poll /sync until ``found(response)``; return that response."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            params: dict[str, Any] = {"timeout": 2000}
            if self.since:
                params["since"] = self.since
            answer = self.call("GET", "/sync", **params)
            self.since = answer["next_batch"]
            if found(answer):
                return dict(answer)
        raise AssertionError(f"{self.user_id} did not see {what} within {timeout_s}s")


def _timeline(answer: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
    return list(room.get("timeline", {}).get("events", []))


def _ephemeral(answer: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
    return list(room.get("ephemeral", {}).get("events", []))


def _has_message(room_id: str, body: str) -> Callable[[dict[str, Any]], bool]:
    return lambda answer: any(
        ev.get("type") == "m.room.message" and ev.get("content", {}).get("body") == body
        for ev in _timeline(answer, room_id)
    )


class PresenceSeen:
    """Every ``m.presence`` a client's syncs carried: a presence may come in the very
    response that first shows the joined room."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}

    def __call__(self, found: Callable[[Any], bool]) -> Callable[[Any], bool]:
        def check(answer: Any) -> bool:
            for ev in answer.get("presence", {}).get("events", []):
                if ev.get("type") == "m.presence":
                    self.latest[ev["sender"]] = ev["content"]
            return found(answer)

        return check

    def has(self, user_id: str, presence: str) -> Callable[[Any], bool]:
        return lambda a: self.latest.get(user_id, {}).get("presence") == presence


@pytest.fixture(scope="module")
def pocket(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    config = pocket_tls_config(tmp_path_factory.mktemp("pocket"), test_ca)
    with running_server(config) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


def _pocket_user(pocket: RunningServer, name: str) -> Client:
    info = pocket.register(name)
    return Client(pocket.client(), info["access_token"], info["user_id"])


def _synapse_user(synapse: SynapsePeer, name: str) -> Client:
    info = synapse.register(name)
    return Client(synapse.client(), info["access_token"], info["user_id"])


def test_a_synapse_user_joins_a_pocketserver_room_and_they_talk(
    pocket: RunningServer, synapse: SynapsePeer
) -> None:
    alice = _pocket_user(pocket, "alice")
    bob = _synapse_user(synapse, "bob")
    room_id = alice.call("POST", "/createRoom", {"preset": "public_chat", "name": "Pi room"})[
        "room_id"
    ]
    alice.send(room_id, "before bob came")
    alice.wait_for(_has_message(room_id, "before bob came"), "her own message")

    alias = f"#pi:{pocket.server_name}"
    alice.call("PUT", f"/directory/room/{quote(alias)}", {"room_id": room_id})

    # Bob joins through Synapse by the alias: Synapse asks pocketserver's directory
    # (/query/directory), then make_join and send_join against pocketserver.
    joined = bob.call("POST", f"/join/{quote(alias)}", {})
    assert joined["room_id"] == room_id, (joined, synapse.log_text()[-3000:])

    # Alice sees the join (it came in through send_join) ...
    alice.wait_for(
        lambda a: any(
            ev.get("type") == "m.room.member" and ev.get("state_key") == bob.user_id
            for ev in _timeline(a, room_id)
        ),
        "bob's join",
    )
    # ... and bob's Synapse holds the room's state, and backfills its earlier history
    # from pocketserver (GET /backfill) when bob scrolls back.
    name = bob.call("GET", f"/rooms/{quote(room_id)}/state/m.room.name/")
    assert name == {"name": "Pi room"}
    deadline = time.monotonic() + WAIT_S
    bodies: list[object] = []
    while time.monotonic() < deadline and "before bob came" not in bodies:
        page = bob.call("GET", f"/rooms/{quote(room_id)}/messages", dir="b", limit=50)
        bodies = [ev.get("content", {}).get("body") for ev in page["chunk"]]
        time.sleep(0.5)
    assert "before bob came" in bodies, bodies

    # pocketserver -> Synapse (our sender).
    from_pi = alice.send(room_id, "hello from the pi")
    bob.wait_for(_has_message(room_id, "hello from the pi"), "alice's message")

    # Synapse -> pocketserver (our inbound transactions).
    from_synapse = bob.send(room_id, "hello from synapse")
    alice.wait_for(_has_message(room_id, "hello from synapse"), "bob's message")

    # Read receipts cross both ways (m.receipt EDUs).
    def read_by(user_id: str, event_id: str) -> Callable[[dict[str, Any]], bool]:
        return lambda a: any(
            ev.get("type") == "m.receipt"
            and user_id in ev.get("content", {}).get(event_id, {}).get("m.read", {})
            for ev in _ephemeral(a, room_id)
        )

    bob.call("POST", f"/rooms/{quote(room_id)}/receipt/m.read/{quote(from_pi)}", {})
    alice.wait_for(read_by(bob.user_id, from_pi), "bob's read receipt")
    alice.call("POST", f"/rooms/{quote(room_id)}/receipt/m.read/{quote(from_synapse)}", {})
    bob.wait_for(read_by(alice.user_id, from_synapse), "alice's read receipt")

    # Typing crosses as an EDU.
    bob.call(
        "PUT",
        f"/rooms/{quote(room_id)}/typing/{quote(bob.user_id)}",
        {"typing": True, "timeout": 30000},
    )
    alice.wait_for(
        lambda a: any(
            ev.get("type") == "m.typing"
            and bob.user_id in ev.get("content", {}).get("user_ids", [])
            for ev in _ephemeral(a, room_id)
        ),
        "bob typing",
    )

    # ... and so does alice's (our typing goes out through the sender).
    alice.call(
        "PUT",
        f"/rooms/{quote(room_id)}/typing/{quote(alice.user_id)}",
        {"typing": True, "timeout": 30000},
    )
    bob.wait_for(
        lambda a: any(
            ev.get("type") == "m.typing"
            and alice.user_id in ev.get("content", {}).get("user_ids", [])
            for ev in _ephemeral(a, room_id)
        ),
        "alice typing",
    )

    # Bob leaves; alice sees it.
    bob.call("POST", f"/rooms/{quote(room_id)}/leave", {})
    alice.wait_for(
        lambda a: any(
            ev.get("type") == "m.room.member"
            and ev.get("state_key") == bob.user_id
            and ev.get("content", {}).get("membership") == "leave"
            for ev in _timeline(a, room_id)
        ),
        "bob's leave",
    )


def test_presence_crosses_with_synapse(pocket: RunningServer, synapse: SynapsePeer) -> None:
    """Synapse learns our user's presence when its user joins our room (we send our
    members' presence to a server new to the room) and every change after; ours
    learns Synapse's user's the same way (Synapse sends it on the join)."""
    dora = _pocket_user(pocket, "dora")
    carl = _synapse_user(synapse, "carl")
    dora.wait_for(lambda a: True, "a first sync")  # syncing: online
    carl.wait_for(lambda a: True, "a first sync")
    room_id = dora.call("POST", "/createRoom", {"preset": "public_chat"})["room_id"]
    alias = f"#presence:{pocket.server_name}"
    dora.call("PUT", f"/directory/room/{quote(alias)}", {"room_id": room_id})
    dora_saw, carl_saw = PresenceSeen(), PresenceSeen()
    assert carl.call("POST", f"/join/{quote(alias)}", {})["room_id"] == room_id

    carl.wait_for(carl_saw(carl_saw.has(dora.user_id, "online")), "dora online")
    dora.wait_for(dora_saw(dora_saw.has(carl.user_id, "online")), "carl online")

    dora.call(
        "PUT",
        f"/presence/{quote(dora.user_id)}/status",
        {"presence": "unavailable", "status_msg": "on the Pi"},
    )
    carl.wait_for(carl_saw(carl_saw.has(dora.user_id, "unavailable")), "dora unavailable")
    assert carl_saw.latest[dora.user_id].get("status_msg") == "on the Pi"
    carl.call("PUT", f"/presence/{quote(carl.user_id)}/status", {"presence": "unavailable"})
    dora.wait_for(dora_saw(dora_saw.has(carl.user_id, "unavailable")), "carl unavailable")
