"""E2EE over federation through the real server: remote users in /keys/query and
/keys/claim, and the federation key routes refusing unauthenticated servers.

The two-server tests (a peer answering) come with the federation client; until a
server has one, every remote server is a failure, answered at once.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
import nacl.signing
import pytest

from tests.e2e_keys.keys import device_keys, signed_otk
from tests.harness import RunningServer

V3 = "/_matrix/client/v3"
FED = "/_matrix/federation/v1"


@pytest.fixture
def c(server: RunningServer):
    with server.client() as client:
        yield client


def _auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


def test_remote_users_are_failures_of_their_servers(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    alice = server.register(new_user)
    started = time.monotonic()
    r = c.post(
        f"{V3}/keys/query",
        headers=_auth(alice),
        json={"device_keys": {"@bob:127.0.0.1:9": [], alice["user_id"]: []}, "timeout": 5000},
    )
    assert r.status_code == 200, r.text
    assert list(r.json()["failures"]) == ["127.0.0.1:9"]
    assert r.json()["failures"]["127.0.0.1:9"]["status"] == 503
    r = c.post(
        f"{V3}/keys/claim",
        headers=_auth(alice),
        json={"one_time_keys": {"@bob:127.0.0.1:9": {"D": "signed_curve25519"}}, "timeout": 5000},
    )
    assert r.status_code == 200, r.text
    assert r.json()["one_time_keys"] == {}
    assert list(r.json()["failures"]) == ["127.0.0.1:9"]
    assert time.monotonic() - started < 5


def test_key_routes_refuse_servers_that_did_not_sign(
    server: RunningServer, c: httpx.Client, new_user: str
) -> None:
    alice = server.register(new_user)
    uid, dev = alice["user_id"], alice["device_id"]
    sk = nacl.signing.SigningKey.generate()
    r = c.post(
        f"{V3}/keys/upload",
        headers=_auth(alice),
        json={
            "device_keys": device_keys(uid, dev, sk),
            "one_time_keys": {"signed_curve25519:K1": signed_otk(uid, dev, sk, 1)},
        },
    )
    assert r.json() == {"one_time_key_counts": {"signed_curve25519": 1}}
    for method, path, body in (
        ("GET", f"{FED}/user/devices/{quote(uid, safe='')}", None),
        ("POST", f"{FED}/user/keys/query", {"device_keys": {uid: []}}),
        ("POST", f"{FED}/user/keys/claim", {"one_time_keys": {uid: {dev: "signed_curve25519"}}}),
    ):
        r = c.request(
            method,
            path,
            json=body,
            headers={"Authorization": 'X-Matrix origin="evil.test",key="ed25519:x",sig="AAAA"'},
        )
        assert (r.status_code, r.json()["errcode"]) == (401, "M_UNAUTHORIZED"), r.text
    # The key is still there: nothing was claimed.
    r = c.post(f"{V3}/keys/upload", headers=_auth(alice), json={})
    assert r.json() == {"one_time_key_counts": {"signed_curve25519": 1}}
