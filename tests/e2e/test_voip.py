"""TURN credentials (GET /voip/turnServer)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from tests.harness import make_config, running_server


def test_turn_credentials_verify_like_coturn(tmp_path) -> None:
    config = make_config(
        tmp_path,
        turn_uris=["turn:turn.example.org:3478?transport=udp"],
        turn_shared_secret="s3cret",
        turn_user_lifetime="1h",
    )
    with running_server(config) as s, s.client() as c:
        token = s.register("caller")["access_token"]
        r = c.get(
            "/_matrix/client/v3/voip/turnServer", headers={"Authorization": f"Bearer {token}"}
        )
        assert c.get("/_matrix/client/v3/voip/turnServer").status_code == 401
    body = r.json()
    assert body["uris"] == ["turn:turn.example.org:3478?transport=udp"]
    assert body["ttl"] == 3600
    expiry, user = body["username"].split(":", 1)
    assert user == "@caller:test.local"
    assert 3500 < int(expiry) - time.time() <= 3600
    expected = hmac.new(b"s3cret", body["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(body["password"]) == expected


def test_no_turn_configured_is_empty(server) -> None:
    token = server.register("noturn")["access_token"]
    with server.client() as c:
        r = c.get(
            "/_matrix/client/v3/voip/turnServer", headers={"Authorization": f"Bearer {token}"}
        )
    assert r.status_code == 200
    assert r.json() == {}
