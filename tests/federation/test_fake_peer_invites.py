"""Invites from the real server (a subprocess, TLS federation on 127.0.0.2) to a small
fake peer on 127.0.0.6 that publishes real keys and signs what it returns, answering
as servers Synapse meets but Synapse itself never is: one without ``v2/invite`` (an
empty 404, as SyTest's fake server), and one whose answer carries a float.

Synapse falls back to ``v1/invite`` for rooms v1-2 and refuses later versions with
``M_UNSUPPORTED_ROOM_VERSION``; a v6+ answer that is not canonical JSON is 400
``M_BAD_JSON`` (SyTest 50federation/35room-invite.pl). Nothing is stored on refusal."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import trio

from pocketserver.core.crypto import generate_signing_key, make_server_keys_response, sign_json
from pocketserver.core.redaction import redact
from tests.federation.synapse_peer import TestCA
from tests.federation.tls_rig import TinyServer, start_tiny_server
from tests.harness import RunningServer

PEER_HOST = "127.0.0.6"
V1_INVITE = "/_matrix/federation/v1/invite/"
V2_INVITE = "/_matrix/federation/v2/invite/"
JSON_HEADERS = {"content-type": "application/json"}


class InvitePeer:
    """Answers invites as ``mode`` says: ``"v1"`` (no v2 endpoint) or ``"floaty"`` (v2,
    the event signed with a float added outside what the signature covers)."""

    def __init__(self) -> None:
        self.key = generate_signing_key("fp1")
        self.name = ""
        self.mode = "v1"

    def countersign(self, event: dict[str, Any], room_version: str) -> dict[str, Any]:
        signed = sign_json(redact(event, room_version), self.name, self.key)
        return {**event, "signatures": {**event["signatures"], **signed["signatures"]}}

    async def handle(self, scope: dict[str, Any], body: bytes) -> tuple[int, dict[str, str], bytes]:
        await trio.lowlevel.checkpoint()
        path, method = scope["path"], scope["method"]
        if path == "/_matrix/key/v2/server":
            keys = make_server_keys_response(
                self.name, self.key, {}, int(time.time() * 1000) + 3_600_000
            )
            return 200, JSON_HEADERS, json.dumps(keys).encode()
        if method == "PUT" and path.startswith(V2_INVITE):
            if self.mode == "v1":
                return 404, {}, b""
            sent = json.loads(body)
            event = self.countersign(sent["event"], sent["room_version"])
            event["bad_val"] = 1.1
            return 200, JSON_HEADERS, json.dumps({"event": event}).encode()
        if method == "PUT" and path.startswith(V1_INVITE) and self.mode == "v1":
            event = self.countersign(json.loads(body), "1")  # v1 and v2 redact alike
            return 200, JSON_HEADERS, json.dumps([200, {"event": event}]).encode()
        return 404, {}, b""


async def test_invites_to_a_peer_without_v2_invite_or_with_a_float(
    pocket_tls: RunningServer, test_ca: TestCA
) -> None:
    peer = InvitePeer()
    app = TinyServer(peer.handle)
    alice = await trio.to_thread.run_sync(pocket_tls.register, "fp_alice")
    headers = {"Authorization": f"Bearer {alice['access_token']}"}
    async with (
        trio.open_nursery() as nursery,
        httpx.AsyncClient(
            base_url=pocket_tls.base_url + "/_matrix/client/v3", headers=headers, timeout=60
        ) as c,
    ):
        port = await start_tiny_server(
            nursery, app, PEER_HOST, test_ca.issue(PEER_HOST, "invite-peer")
        )
        peer.name = f"{PEER_HOST}:{port}"
        bob = f"@bob:{peer.name}"

        async def room(version: str) -> str:
            r = await c.post("/createRoom", json={"room_version": version})
            assert r.status_code == 200, r.text
            return str(r.json()["room_id"])

        async def invite(room_id: str) -> httpx.Response:
            return await c.post(f"/rooms/{room_id}/invite", json={"user_id": bob})

        async def member(room_id: str) -> str | None:
            r = await c.get(f"/rooms/{room_id}/state/m.room.member/{bob}")
            return r.json().get("membership") if r.status_code == 200 else None

        def invite_paths() -> list[str]:
            return [
                s["path"][: len(V1_INVITE)]
                for s in app.seen.requests
                if s["method"] == "PUT" and "/invite/" in s["path"]
            ]

        # No v2/invite: a v1 room's invite goes over v1/invite, countersigned.
        for version in ("1", "2"):
            before = len(invite_paths())
            room_id = await room(version)
            r = await invite(room_id)
            assert r.status_code == 200, r.text
            assert await member(room_id) == "invite"
            assert invite_paths()[before:] == [V2_INVITE, V1_INVITE]

        # A later room version cannot go over v1: refused, nothing stored or sent.
        room_id = await room("10")
        before = len(invite_paths())
        r = await invite(room_id)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION")
        assert await member(room_id) is None
        assert invite_paths()[before:] == [V2_INVITE]

        # A float in the answer of a v6+ room: M_BAD_JSON, nothing stored.
        peer.mode = "floaty"
        for version in ("6", "10"):
            room_id = await room(version)
            r = await invite(room_id)
            assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON"), r.text
            assert await member(room_id) is None
        nursery.cancel_scope.cancel()
    assert "Traceback" not in pocket_tls.log_text()
