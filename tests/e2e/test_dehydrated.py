"""Dehydrated devices (MSC3814, unstable) through the real server: raw HTTP for exact
answers; the keys and messages a dehydrated device gets; every way it goes away; and
matrix-js-sdk's Rust crypto dehydrating and rehydrating a device
(tests/js/dehydration_scenario.mjs)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import nacl.signing
import pytest

from tests.e2e.js_scenarios import run_scenario, verify_signature
from tests.e2e.test_js_sdk import node_modules
from tests.e2e_keys.keys import device_keys, sign, signed_otk
from tests.harness import RunningServer, make_config, running_server

__all__ = ["node_modules"]  # the fixture, imported for pytest

V3 = "/_matrix/client/v3"
MSC = "/_matrix/client/unstable/org.matrix.msc3814.v1"
DATA = {"algorithm": "org.matrix.msc3814.v2", "device_pickle": "cGlja2xl", "nonce": "bm9uY2U"}


def _auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


@pytest.fixture
def c(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return dict(r.json())


def _err(r: httpx.Response, status: int, errcode: str) -> None:
    assert (r.status_code, r.json().get("errcode")) == (status, errcode), r.text


def _body(user_id: str, device_id: str, otks: int = 3) -> dict[str, Any]:
    sk = nacl.signing.SigningKey.generate()
    keys = device_keys(user_id, device_id, sk)
    keys = sign({**keys, "dehydrated": True}, user_id, f"ed25519:{device_id}", sk)
    return {
        "device_id": device_id,
        "device_data": DATA,
        "initial_device_display_name": "Dehydrated device",
        "device_keys": keys,
        "one_time_keys": {
            f"signed_curve25519:K{i}": signed_otk(user_id, device_id, sk, i) for i in range(otks)
        },
        "fallback_keys": {
            "signed_curve25519:FB": signed_otk(user_id, device_id, sk, 99, fallback=True)
        },
    }


def _put(c: httpx.Client, user: dict[str, str], device_id: str) -> None:
    r = c.put(
        MSC + "/dehydrated_device", headers=_auth(user), json=_body(user["user_id"], device_id)
    )
    assert _ok(r) == {"device_id": device_id}


def _events_path(device_id: str) -> str:
    return f"{MSC}/dehydrated_device/{quote(device_id, safe='')}/events"


def _send(c: httpx.Client, sender: dict[str, str], to: str, device_id: str, n: int) -> None:
    for i in range(n):
        r = c.put(
            f"{V3}/sendToDevice/m.room.encrypted/t{i}-{time.monotonic_ns()}",
            headers=_auth(sender),
            json={"messages": {to: {device_id: {"n": i}}}},
        )
        _ok(r)


def _query(c: httpx.Client, asker: dict[str, str], user_id: str) -> dict[str, Any]:
    r = c.post(V3 + "/keys/query", headers=_auth(asker), json={"device_keys": {user_id: []}})
    return dict(_ok(r)["device_keys"][user_id])


# The device ID is the Curve25519 key in unpadded base64: it may hold "/" and "+".
DEVICE = "AbC/dEf+GhIjKlMnOpQrStUvWxYz0123456789abcde"


def test_versions_advertises_msc3814(c: httpx.Client) -> None:
    assert _ok(c.get("/_matrix/client/versions"))["unstable_features"]["org.matrix.msc3814"]


def test_dehydrate_then_rehydrate(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    alice = server.register(new_user + "a")
    bob = server.register(new_user + "b")
    uid = alice["user_id"]
    _err(c.get(MSC + "/dehydrated_device", headers=_auth(alice)), 404, "M_NOT_FOUND")
    _put(c, alice, DEVICE)
    assert _ok(c.get(MSC + "/dehydrated_device", headers=_auth(alice))) == {
        "device_id": DEVICE,
        "device_data": DATA,
    }
    # Bob sees the device, marked dehydrated, and can claim its keys.
    seen = _query(c, bob, uid)[DEVICE]
    assert seen["dehydrated"] is True
    assert seen["unsigned"] == {"device_display_name": "Dehydrated device"}
    claim = {"one_time_keys": {uid: {DEVICE: "signed_curve25519"}}}
    r = _ok(c.post(V3 + "/keys/claim", headers=_auth(bob), json=claim))
    assert list(r["one_time_keys"][uid][DEVICE]) == ["signed_curve25519:K0"]
    # Bob sends it 150 messages (and alice's own device one, which stays apart).
    _send(c, bob, uid, DEVICE, 150)
    _send(c, bob, uid, alice["device_id"], 1)
    # A new login of alice reads them in batches; each batch has a next_batch, and the
    # end is an empty batch (what matrix-js-sdk loops on).
    alice2 = server.login(uid).json()
    got: list[int] = []
    body: dict[str, Any] = {}
    sizes = []
    while True:
        page = _ok(c.post(_events_path(DEVICE), headers=_auth(alice2), json=body))
        sizes.append(len(page["events"]))
        if not page["events"]:
            break
        assert {e["sender"] for e in page["events"]} == {bob["user_id"]}
        assert {e["type"] for e in page["events"]} == {"m.room.encrypted"}
        got.extend(e["content"]["n"] for e in page["events"])
        body = {"next_batch": page["next_batch"]}
    assert got == list(range(150))
    assert sizes == [100, 50, 0]
    # Nothing was deleted: the first page again, now with GET ?from= and a limit.
    page = _ok(c.get(_events_path(DEVICE), headers=_auth(alice2), params={"limit": 20}))
    assert [e["content"]["n"] for e in page["events"]] == list(range(20))
    page = _ok(
        c.get(
            _events_path(DEVICE),
            headers=_auth(alice2),
            params={"from": page["next_batch"], "limit": 200},
        )
    )
    # At most 100 per batch, whatever the limit asked.
    assert [e["content"]["n"] for e in page["events"]] == list(range(20, 120))
    assert "next_batch" in page
    page = _ok(
        c.get(_events_path(DEVICE), headers=_auth(alice2), params={"from": page["next_batch"]})
    )
    assert [e["content"]["n"] for e in page["events"]] == list(range(120, 150))
    assert "next_batch" not in page  # the later draft: no next_batch at the end
    page = _ok(c.get(_events_path(DEVICE), headers=_auth(alice2), params={"from": "d0"}))
    assert len(page["events"]) == 100
    assert "next_batch" in page
    # An empty body on POST starts from the beginning too.
    r = c.post(_events_path(DEVICE), headers=_auth(alice2), content=b"")
    assert len(_ok(r)["events"]) == 100
    # The dehydrated device's ID cannot be logged in to.
    _err(server.login(uid, device_id=DEVICE), 400, "M_INVALID_PARAM")
    devices = _ok(c.get(V3 + "/devices", headers=_auth(alice2)))["devices"]
    assert DEVICE in {d["device_id"] for d in devices}
    # DELETE /dehydrated_device (no UIA) takes it away with its keys.
    assert _ok(c.delete(MSC + "/dehydrated_device", headers=_auth(alice2))) == {"device_id": DEVICE}
    assert DEVICE not in _query(c, bob, uid)
    _err(c.delete(MSC + "/dehydrated_device", headers=_auth(alice2)), 404, "M_NOT_FOUND")
    _err(c.post(_events_path(DEVICE), headers=_auth(alice2), json={}), 403, "M_FORBIDDEN")


def test_replacing_and_logout_all(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    alice = server.register(new_user + "a")
    bob = server.register(new_user + "b")
    uid = alice["user_id"]
    _put(c, alice, "FIRST")
    _send(c, bob, uid, "FIRST", 3)
    _put(c, alice, "SECOND")
    assert _ok(c.get(MSC + "/dehydrated_device", headers=_auth(alice)))["device_id"] == "SECOND"
    assert set(_query(c, bob, uid)) == {"SECOND"}
    _err(c.post(_events_path("FIRST"), headers=_auth(alice), json={}), 403, "M_FORBIDDEN")
    page = _ok(c.post(_events_path("SECOND"), headers=_auth(alice), json={}))
    assert page["events"] == []
    assert isinstance(page["next_batch"], str)
    # logout/all deletes every device, the dehydrated one too.
    _ok(c.post(V3 + "/logout/all", headers=_auth(alice), json={}))
    alice2 = server.login(uid).json()
    _err(c.get(MSC + "/dehydrated_device", headers=_auth(alice2)), 404, "M_NOT_FOUND")
    assert "SECOND" not in _query(c, bob, uid)


def test_delete_through_the_device_api(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    """MSC3814: ``DELETE /devices/{deviceId}`` deletes it too (the ID holds a "/")."""
    alice = server.register(new_user)
    uid = alice["user_id"]
    _put(c, alice, DEVICE)
    path = f"{V3}/devices/{quote(DEVICE, safe='')}"
    assert _ok(c.get(path, headers=_auth(alice)))["display_name"] == "Dehydrated device"
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": uid},
        "password": "correct horse",
    }
    _ok(c.request("DELETE", path, headers=_auth(alice), json={"auth": auth}))
    _err(c.get(MSC + "/dehydrated_device", headers=_auth(alice)), 404, "M_NOT_FOUND")
    _err(c.get(path, headers=_auth(alice)), 404, "M_NOT_FOUND")


def test_bad_requests(server: RunningServer, c: httpx.Client, new_user: str) -> None:
    alice = server.register(new_user)
    uid = alice["user_id"]
    _err(c.get(MSC + "/dehydrated_device"), 401, "M_MISSING_TOKEN")
    _err(c.put(MSC + "/dehydrated_device", json=_body(uid, "D")), 401, "M_MISSING_TOKEN")
    put = MSC + "/dehydrated_device"
    _err(c.put(put, headers=_auth(alice), content=b"{"), 400, "M_NOT_JSON")
    _err(c.put(put, headers=_auth(alice), json={}), 400, "M_MISSING_PARAM")
    body = _body(uid, "D")
    _err(c.put(put, headers=_auth(alice), json={**body, "device_data": 1}), 400, "M_BAD_JSON")
    big = {"algorithm": "a", "device_pickle": "x" * 70_000}
    _err(c.put(put, headers=_auth(alice), json={**body, "device_data": big}), 413, "M_TOO_LARGE")
    no_keys = {k: v for k, v in body.items() if k != "device_keys"}
    _err(c.put(put, headers=_auth(alice), json=no_keys), 400, "M_MISSING_PARAM")
    _err(
        c.put(put, headers=_auth(alice), json=_body(uid, alice["device_id"])),
        400,
        "M_INVALID_PARAM",
    )
    _err(c.get(put, headers=_auth(alice)), 404, "M_NOT_FOUND")
    _put(c, alice, "D")
    events = _events_path("D")
    _err(c.post(events, headers=_auth(alice), json={"next_batch": 5}), 400, "M_BAD_JSON")
    _err(c.post(events, headers=_auth(alice), json={"next_batch": "x"}), 400, "M_INVALID_PARAM")
    _err(c.get(events, headers=_auth(alice), params={"limit": "-1"}), 400, "M_INVALID_PARAM")
    _err(c.get(events, headers=_auth(alice), params={"limit": "0"}), 400, "M_INVALID_PARAM")
    _err(c.post(events, headers=_auth(alice), content=b"[]"), 400, "M_BAD_JSON")
    _err(c.post(_events_path(alice["device_id"]), headers=_auth(alice)), 403, "M_FORBIDDEN")
    # Only under the unstable prefix.
    _err(c.get(V3 + "/dehydrated_device", headers=_auth(alice)), 404, "M_UNRECOGNIZED")
    _err(c.patch(put, headers=_auth(alice)), 405, "M_UNRECOGNIZED")
    assert " 500 " not in server.log_text()


def test_js_sdk_dehydration(node_modules: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path, rc_message={"per_second": 1000, "burst_count": 1000})
    with running_server(config) as s:
        uid = s.register("dhalice", "pw-alice")["user_id"]
        s.register("dhbob", "pw-bob")
        scenario = {
            "baseUrl": s.base_url,
            "alice": {"user": "dhalice", "password": "pw-alice"},
            "bob": {"user": "dhbob", "password": "pw-bob"},
        }
        ran = run_scenario("dehydration_scenario.mjs", scenario, 150)
        assert "ok the new login reads bob's message" in ran["stdout"], ran["stdout"]
        result = ran["result"]
        assert result["messages_for_dehydrated"] >= 1
        assert result["room_keys"] >= 1
        first, second = result["first_dehydrated"], result["second_dehydrated"]
        alice = {"access_token": s.login("dhalice", "pw-alice").json()["access_token"]}
        with s.client() as c:
            assert _ok(c.get(MSC + "/dehydrated_device", headers=_auth(alice)))["device_id"] == (
                second
            )
            r = c.post(V3 + "/keys/query", headers=_auth(alice), json={"device_keys": {uid: []}})
            body = _ok(r)
            devices = body["device_keys"][uid]
            # The replaced dehydrated device and the logged-out A1 are gone.
            assert first not in devices
            assert result["a1"] not in devices
            assert result["a2"] in devices
            # The new one: marked, self-signed and cross-signed by the self-signing key.
            keys = devices[second]
            assert keys["dehydrated"] is True
            assert keys["keys"][f"curve25519:{second}"] == second  # MSC3814: its ID
            verify_signature(keys, uid, f"ed25519:{second}", keys["keys"][f"ed25519:{second}"])
            ssk = result["self_signing"]
            assert body["self_signing_keys"][uid]["keys"] == {f"ed25519:{ssk}": ssk}
            verify_signature(keys, uid, f"ed25519:{ssk}", ssk)
            # The first one's messages went with it.
            events = c.post(_events_path(first), headers=_auth(alice), json={})
            _err(events, 403, "M_FORBIDDEN")
        log = s.log_text()
    assert " 500 " not in log
    assert "Traceback" not in log
