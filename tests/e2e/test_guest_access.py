"""Guest access through the real server: registration, refused endpoints, joins, guests
leaving when a room's guest access ends, the upgrade, and matrix-js-sdk's registerGuest()."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.test_js_sdk import JS, node_modules  # noqa: F401  (the npm fixture)
from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"
PASSWORD = "a fine long password"


@pytest.fixture(scope="module")
def guests_on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("guests"),
        allow_guest_access=True,
        enable_registration=True,
        rc_message={"per_second": 1000, "burst_count": 1000},
    )
    with running_server(config) as s:
        yield s
    log = s.log_text()
    assert "Traceback" not in log, log
    assert " 500 " not in log, log


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def guest(c: httpx.Client, **body: object) -> dict[str, Any]:
    r = c.post(f"{V3}/register?kind=guest", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def user(server: RunningServer, localpart: str) -> dict[str, Any]:
    server.register(localpart, PASSWORD)
    r = server.login(localpart, PASSWORD)
    assert r.status_code == 200, r.text
    return dict(r.json())


def create_room(c: httpx.Client, token: str, guest_access: str | None) -> str:
    initial = (
        [{"type": "m.room.guest_access", "content": {"guest_access": guest_access}}]
        if guest_access
        else []
    )
    r = c.post(
        f"{V3}/createRoom",
        headers=auth(token),
        json={"preset": "public_chat", "initial_state": initial},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


def membership(c: httpx.Client, token: str, room_id: str, user_id: str) -> str | None:
    r = c.get(f"{V3}/rooms/{room_id}/state/m.room.member/{quote(user_id)}", headers=auth(token))
    return r.json().get("membership") if r.status_code == 200 else None


def test_disabled_by_default(server: RunningServer) -> None:
    with server.client() as c:
        r = c.post(f"{V3}/register?kind=guest", json={})
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


def test_guest_session(guests_on: RunningServer) -> None:
    with guests_on.client() as c:
        g = guest(c, initial_device_display_name="Visitor's browser", username="ignored")
        assert g["user_id"].split(":")[0][1:].isdigit()
        token = g["access_token"]
        r = c.get(f"{V3}/account/whoami", headers=auth(token))
        assert r.json() == {"user_id": g["user_id"], "device_id": g["device_id"], "is_guest": True}
        r = c.get(f"{V3}/devices", headers=auth(token))
        assert r.json()["devices"][0]["display_name"] == "Visitor's browser"
        # One endpoint of each refused kind.
        for method, path, body in (
            ("POST", "/createRoom", {}),
            ("POST", f"/user/{quote(g['user_id'])}/filter", {}),
            ("PUT", f"/profile/{quote(g['user_id'])}/avatar_url", {"avatar_url": "mxc://a/b"}),
            ("GET", "/pushrules/", None),
            ("POST", "/logout", {}),
            ("GET", "/room_keys/version", None),
        ):
            r = c.request(method, V3 + path, headers=auth(token), json=body)
            assert r.status_code == 403, path
            assert r.json()["errcode"] == "M_GUEST_ACCESS_FORBIDDEN", path
        r = c.put(
            f"{V3}/profile/{quote(g['user_id'])}/displayname",
            headers=auth(token),
            json={"displayname": "Visitor"},
        )
        assert r.status_code == 200
        r = c.get(f"{V3}/sync", params={"timeout": 0}, headers=auth(token))
        assert r.status_code == 200


def test_joins_and_guest_access_ending(guests_on: RunningServer) -> None:
    owner = user(guests_on, "guestowner")
    with guests_on.client() as c:
        g = guest(c)
        token = g["access_token"]
        closed = create_room(c, owner["access_token"], None)
        r = c.post(f"{V3}/join/{closed}", headers=auth(token), json={})
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_FORBIDDEN"
        room_id = create_room(c, owner["access_token"], "can_join")
        r = c.post(f"{V3}/rooms/{room_id}/join", headers=auth(token), json={})
        assert r.status_code == 200, r.text
        r = c.put(
            f"{V3}/rooms/{room_id}/send/m.room.message/g1",
            headers=auth(token),
            json={"msgtype": "m.text", "body": "hello as a guest"},
        )
        assert r.status_code == 200
        r = c.put(
            f"{V3}/rooms/{room_id}/state/m.room.guest_access/",
            headers=auth(owner["access_token"]),
            json={"guest_access": "forbidden"},
        )
        assert r.status_code == 200
        deadline = time.monotonic() + 10
        while membership(c, owner["access_token"], room_id, g["user_id"]) != "leave":
            assert time.monotonic() < deadline, "the guest was not made to leave"
            time.sleep(0.05)
        assert membership(c, owner["access_token"], room_id, owner["user_id"]) == "join"
        r = c.post(f"{V3}/rooms/{room_id}/join", headers=auth(token), json={})
        assert r.status_code == 403


def test_upgrade(guests_on: RunningServer) -> None:
    with guests_on.client() as c:
        g = guest(c)
        localpart = g["user_id"].split(":")[0][1:]
        body = {
            "username": localpart,
            "password": PASSWORD,
            "guest_access_token": g["access_token"],
        }
        r = c.post(f"{V3}/register", json=body)
        assert r.status_code == 401, r.text
        session = r.json()["session"]
        r = c.post(
            f"{V3}/register", json={**body, "auth": {"type": "m.login.dummy", "session": session}}
        )
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == g["user_id"]
        r = c.get(f"{V3}/account/whoami", headers=auth(r.json()["access_token"]))
        assert r.json()["is_guest"] is False
        r = c.get(f"{V3}/account/whoami", headers=auth(g["access_token"]))
        assert r.status_code == 401
    assert guests_on.login(localpart, PASSWORD).status_code == 200
    with guests_on.client() as c:
        r = c.post(f"{V3}/register", json={**body, "guest_access_token": "not a token"})
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"


JS_GUEST = r"""
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
logger.setLevel("silent");

const cfg = JSON.parse(process.env.GUEST_SCENARIO);
const fail = (step, e) => {
  console.log(`FAIL ${step}: ${e?.data?.errcode ?? ""} ${e?.message ?? e}`);
  process.exit(1);
};
const timeout = (ms) => new Promise((_, no) => setTimeout(() => no(new Error("timed out")), ms));

const bare = sdk.createClient({ baseUrl: cfg.baseUrl });
const reg = await bare
  .registerGuest({ body: { initial_device_display_name: "js-sdk guest" } })
  .catch((e) => fail("registerGuest", e));
console.log(`ok registered ${reg.user_id}`);
const client = sdk.createClient({
  baseUrl: cfg.baseUrl,
  accessToken: reg.access_token,
  userId: reg.user_id,
  deviceId: reg.device_id,
});
client.setGuest(true);
const ready = new Promise((resolve, reject) => {
  client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
    if (state === "PREPARED" || state === "SYNCING") resolve();
    if (state === "ERROR") reject(data?.error ?? new Error("sync error"));
  });
});
await client.startClient({ initialSyncLimit: 10 });
await Promise.race([ready, timeout(20000)]).catch((e) => fail("sync", e));
console.log("ok synced");
const seen = new Promise((resolve) => {
  client.on(sdk.RoomEvent.Timeline, (event) => {
    if (event.getContent().body === "welcome, guest") resolve();
  });
});
await client.joinRoom(cfg.roomId).catch((e) => fail("join", e));
console.log("ok joined");
await client
  .sendEvent(cfg.roomId, "m.room.message", { msgtype: "m.text", body: "hi from a guest" })
  .catch((e) => fail("send", e));
console.log("ok sent");
console.log("READY");
await Promise.race([seen, timeout(20000)]).catch((e) => fail("receive", e));
console.log("ok received");
client.stopClient();
process.exit(0);
"""


def test_js_sdk_register_guest(
    node_modules: Path,  # noqa: F811
    guests_on: RunningServer,
) -> None:
    owner = user(guests_on, "jsguestowner")
    with guests_on.client() as c:
        room_id = create_room(c, owner["access_token"], "can_join")
        scenario = {"baseUrl": guests_on.base_url, "roomId": room_id}
        lines: list[str] = []
        with subprocess.Popen(
            ["node", "--input-type=module", "-e", JS_GUEST],
            cwd=JS,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "GUEST_SCENARIO": json.dumps(scenario)},
        ) as proc:
            killer = threading.Timer(120, proc.kill)  # never hang the suite
            killer.start()
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append(line)
                    if line.strip() == "READY":
                        r = c.put(
                            f"{V3}/rooms/{room_id}/send/m.room.message/w1",
                            headers=auth(owner["access_token"]),
                            json={"msgtype": "m.text", "body": "welcome, guest"},
                        )
                        assert r.status_code == 200
                proc.wait()
            finally:
                killer.cancel()
        output = "".join(lines)
        assert proc.returncode == 0, output
        assert "ok received" in output, output
        r = c.get(
            f"{V3}/rooms/{room_id}/messages",
            params={"dir": "b", "limit": 10},
            headers=auth(owner["access_token"]),
        )
        bodies = [e["content"].get("body") for e in r.json()["chunk"]]
        assert "hi from a guest" in bodies
