"""Policy servers end to end (spec v1.18): the real server as a subprocess in a room
whose ``m.room.policy`` names a fake policy server.

The fake is a small HTTPS server on 127.0.0.4 with a certificate of the test CA: it
publishes its server key, answers ``POST /_matrix/policy/v1/sign`` (signing with the
room's policy key unless the body says "spam", which it refuses with its own error),
takes transactions, and as a homeserver joins its user ``@ps`` to the room through
``make_join``/``send_join`` and sends PDUs with ``PUT /send``.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from pocketserver.core.auth_rules import auth_types_for_event
from pocketserver.core.crypto import (
    add_hashes_and_signatures,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
    make_server_keys_response,
    sign_json,
)
from pocketserver.core.events import compute_event_id
from pocketserver.core.policy_server import (
    POLICY_KEY_ID,
    add_policy_signature,
    has_valid_signature,
    policy_from_content,
)
from pocketserver.core.redaction import redact
from pocketserver.federation.xmatrix import authorization_header
from tests.federation.conftest import pocket_tls_config
from tests.federation.synapse_peer import SynapsePeer, TestCA, free_port, trusting
from tests.federation.test_synapse_rooms import (
    Client,
    _has_message,
    _pocket_user,
    _synapse_user,
    _timeline,
)
from tests.harness import RunningServer, running_server

HOST = "127.0.0.4"


class FakePolicyServer:
    """See the module docstring. Runs in a thread of the test process."""

    def __init__(self, ca: TestCA) -> None:
        self.port = free_port(HOST)
        self.name = f"{HOST}:{self.port}"
        self.server_key = generate_signing_key("ps1")
        self.policy_key = generate_signing_key("policy_server")
        self.asked: list[dict[str, Any]] = []
        self.origins: list[str] = []
        self.strict = False
        """Sign only for the event's own server: another server asking again (because
        the signature it got was not valid) is refused."""
        self.ca = ca
        cert, key = ca.issue(HOST, "policy")
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: object) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_GET(self) -> None:
                if self.path == "/_matrix/key/v2/server":
                    until = int(time.time() * 1000) + 86_400_000
                    self._answer(
                        200, make_server_keys_response(fake.name, fake.server_key, None, until)
                    )
                else:
                    self._answer(404, {"errcode": "M_UNRECOGNIZED", "error": "no"})

            def do_POST(self) -> None:
                body = self._body()
                if self.path != "/_matrix/policy/v1/sign":
                    self._answer(404, {"errcode": "M_UNRECOGNIZED", "error": "no"})
                    return
                fake.asked.append(body)
                auth = self.headers.get("Authorization") or ""
                origin = auth.partition('origin="')[2].partition('"')[0]
                fake.origins.append(origin)
                sender_server = str(body.get("sender", "")).partition(":")[2]
                if fake.strict and origin != sender_server:
                    self._answer(403, {"errcode": "M_FORBIDDEN", "error": "ask yourself"})
                    return
                if "spam" in str(body.get("content", {}).get("body", "")):
                    self._answer(400, {"errcode": "M_FORBIDDEN", "error": "spam!"})
                    return
                signed = sign_json(redact(body, "10"), fake.name, fake.policy_key)
                self._answer(200, {fake.name: signed["signatures"][fake.name]})  # type: ignore[index]

            def do_PUT(self) -> None:
                self._body()
                if self.path.startswith("/_matrix/federation/v1/send/"):
                    self._answer(200, {"pdus": {}})
                else:
                    self._answer(404, {"errcode": "M_UNRECOGNIZED", "error": "no"})

        self.httpd = ThreadingHTTPServer((HOST, self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def policy_content(self) -> dict[str, Any]:
        public = encode_verify_key_base64(get_verify_key(self.policy_key))
        return {"via": self.name, "public_keys": {"ed25519": public}}

    def policy_signature(self, pdu: dict[str, Any], key: Any) -> dict[str, Any]:
        policy = policy_from_content(self.policy_content, "")
        assert policy is not None
        signed = sign_json(redact(pdu, "10"), self.name, key)
        return add_policy_signature(pdu, policy, {self.name: signed["signatures"][self.name]})  # type: ignore[index]

    # --- as a homeserver talking to pocketserver ---------------------------------

    def fed(self, pocket: RunningServer, method: str, path: str, body: Any = None) -> Any:
        auth = authorization_header(
            self.name, pocket.server_name, self.server_key, method, path, body
        )
        with httpx.Client(verify=trusting(self.ca.ca_path), timeout=30) as http:
            r = http.request(
                method,
                f"https://{pocket.server_name}{path}",
                json=body,
                headers={"Authorization": auth},
            )
        assert r.status_code == 200, (method, path, r.status_code, r.text)
        return r.json()


@pytest.fixture(scope="module")
def pocket(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    config = pocket_tls_config(tmp_path_factory.mktemp("pocket"), test_ca)
    with running_server(config) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


@pytest.fixture(scope="module")
def ps(test_ca: TestCA) -> Iterator[FakePolicyServer]:
    fake = FakePolicyServer(test_ca)
    yield fake
    fake.close()


class RoomOfPs:
    """The fake's view of the room: what it needs to build its PDUs."""

    def __init__(self, ps: FakePolicyServer, pocket: RunningServer, room_id: str) -> None:
        self.ps, self.pocket, self.room_id = ps, pocket, room_id
        self.user = f"@ps:{ps.name}"
        made = ps.fed(
            pocket,
            "GET",
            f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote(self.user)}?ver=10",
        )
        assert made["room_version"] == "10"
        event = {**made["event"], "origin_server_ts": int(time.time() * 1000)}
        join = add_hashes_and_signatures(event, "10", ps.name, ps.server_key)
        join_id = compute_event_id(join, "10")
        answer = ps.fed(
            pocket, "PUT", f"/_matrix/federation/v2/send_join/{quote(room_id)}/{join_id}", join
        )
        self.state = {
            (ev["type"], ev["state_key"]): compute_event_id(ev, "10") for ev in answer["state"]
        }
        self.state[("m.room.member", self.user)] = join_id
        self.last = (join_id, int(join["depth"]))
        self.txn = 0

    def message(self, body: str, after: tuple[str, int]) -> dict[str, Any]:
        content = {"msgtype": "m.text", "body": body}
        skeleton = {"type": "m.room.message", "sender": self.user, "content": content}
        auth = [self.state[k] for k in auth_types_for_event("10", skeleton) if k in self.state]
        pdu = {
            **skeleton,
            "room_id": self.room_id,
            "origin_server_ts": int(time.time() * 1000),
            "depth": after[1] + 1,
            "prev_events": [after[0]],
            "auth_events": auth,
        }
        return add_hashes_and_signatures(pdu, "10", self.ps.name, self.ps.server_key)

    def send(self, *pdus: dict[str, Any]) -> None:
        self.txn += 1
        body = {
            "origin": self.ps.name,
            "origin_server_ts": int(time.time() * 1000),
            "pdus": list(pdus),
        }
        answer = self.ps.fed(self.pocket, "PUT", f"/_matrix/federation/v1/send/t{self.txn}", body)
        assert all(not r for r in answer["pdus"].values()), answer


def _bodies(client: Client, room_id: str) -> list[str]:
    page = client.call("GET", f"/rooms/{quote(room_id)}/messages", dir="b", limit=50)
    return [ev["content"].get("body") for ev in page["chunk"] if ev["type"] == "m.room.message"]


def test_a_room_with_a_policy_server(pocket: RunningServer, ps: FakePolicyServer) -> None:
    alice = _pocket_user(pocket, "alice")
    room_id = alice.call("POST", "/createRoom", {"preset": "public_chat", "room_version": "10"})[
        "room_id"
    ]
    room = RoomOfPs(ps, pocket, room_id)
    alice.wait_for(
        lambda a: any(ev.get("state_key") == room.user for ev in _timeline(a, room_id)), "ps joined"
    )
    alice.call("PUT", f"/rooms/{quote(room_id)}/state/m.room.policy/", ps.policy_content)
    assert ps.asked == []  # m.room.policy itself is never sent to be signed
    # we are not a policy server ("Unsupported Endpoints": 404 M_UNRECOGNIZED)
    with httpx.Client(verify=trusting(ps.ca.ca_path), timeout=30) as http:
        r = http.post(f"https://{pocket.server_name}/_matrix/policy/v1/sign", json={})
    assert (r.status_code, r.json()["errcode"]) == (404, "M_UNRECOGNIZED")

    # our user's message is signed by the policy server before it is stored and sent
    hello = alice.send(room_id, "hello")
    assert [a["content"]["body"] for a in ps.asked] == ["hello"]
    pdu = ps.fed(pocket, "GET", f"/_matrix/federation/v1/event/{quote(hello)}")["pdus"][0]
    policy = policy_from_content(ps.policy_content, "")
    assert policy is not None
    assert has_valid_signature(pdu, "10", policy)
    assert POLICY_KEY_ID in pdu["signatures"][ps.name]

    # one the policy server refuses: its error to the client, nothing stored
    r = alice.http.put(
        f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/spam1",
        json={"msgtype": "m.text", "body": "buy spam"},
    )
    assert r.status_code == 400, r.text
    assert r.json() == {"errcode": "M_FORBIDDEN", "error": "spam!"}
    assert "buy spam" not in _bodies(alice, room_id)

    # the attacker's side: a PDU with a forged policy signature (which the policy
    # server, asked again, refuses) is soft-failed; then a validly signed one and an
    # unsigned one the policy server signs when asked again are shown
    after = (hello, int(pdu["depth"]))
    forged = ps.policy_signature(
        room.message("forged spam", after), generate_signing_key("policy_server")
    )
    forged_id = compute_event_id(forged, "10")
    signed = ps.policy_signature(
        room.message("signed hi", (forged_id, after[1] + 1)), ps.policy_key
    )
    signed_id = compute_event_id(signed, "10")
    unsigned = room.message("unsigned hi", (signed_id, after[1] + 2))
    room.send(forged, signed, unsigned)
    seen: list[str] = []

    def both(answer: dict[str, Any]) -> bool:
        seen.extend(
            ev["content"].get("body")
            for ev in _timeline(answer, room_id)
            if ev["type"] == "m.room.message"
        )
        return "signed hi" in seen and "unsigned hi" in seen

    alice.wait_for(both, "the signed messages")
    assert "forged spam" not in seen
    bodies = _bodies(alice, room_id)
    assert "forged spam" not in bodies
    assert {"hello", "signed hi", "unsigned hi"} <= set(bodies)
    r = alice.http.get(f"/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(forged_id)}")
    assert r.status_code == 404, r.text
    asked = [a["content"]["body"] for a in ps.asked]
    assert asked == ["hello", "buy spam", "forged spam", "unsigned hi"]


def test_policy_signatures_interoperate_with_synapse(
    pocket: RunningServer, ps: FakePolicyServer, synapse: SynapsePeer
) -> None:
    """Synapse 1.163 in the room: it accepts the policy signature we added (the policy
    server, strict, would refuse Synapse asking again, so Synapse would soft-fail an
    event whose signature it found invalid), and we accept the one Synapse added
    without asking again."""
    alice = _pocket_user(pocket, "alice2")
    bob = _synapse_user(synapse, "bob2")
    room_id = alice.call("POST", "/createRoom", {"preset": "public_chat", "room_version": "10"})[
        "room_id"
    ]
    room = RoomOfPs(ps, pocket, room_id)
    bob.call("POST", f"/join/{quote(room_id)}?server_name={quote(pocket.server_name)}", {})
    alice.wait_for(
        lambda a: any(ev.get("state_key") == bob.user_id for ev in _timeline(a, room_id)),
        "bob's join",
    )
    alice.call("PUT", f"/rooms/{quote(room_id)}/state/m.room.policy/", ps.policy_content)
    bob.wait_for(
        lambda a: any(ev.get("type") == "m.room.policy" for ev in _timeline(a, room_id)),
        "the policy state",
    )
    assert room.user in {
        ev["state_key"]
        for ev in bob.call("GET", f"/rooms/{quote(room_id)}/state")
        if ev["type"] == "m.room.member"
    }
    ps.strict = True
    ps.asked.clear()
    ps.origins.clear()
    try:
        alice.send(room_id, "from pocket")
        bob.wait_for(_has_message(room_id, "from pocket"), "alice's signed message")
        bob.send(room_id, "from synapse")
        alice.wait_for(_has_message(room_id, "from synapse"), "bob's signed message")
        asked = [(a["content"]["body"], o) for a, o in zip(ps.asked, ps.origins, strict=True)]
        assert asked == [
            ("from pocket", pocket.server_name),
            ("from synapse", synapse.server_name),
        ], (asked, synapse.log_text()[-3000:])
    finally:
        ps.strict = False
