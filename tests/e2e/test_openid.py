"""OpenID tokens through the real server: request_token for oneself only, userinfo
answers the user, bad/expired tokens 401, tokens survive a restart (issue #9)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx

from tests.harness import make_config, running_server

V3 = "/_matrix/client/v3"
USERINFO = "/_matrix/federation/v1/openid/userinfo"


def _request(c: httpx.Client, token: str, user_id: str, body: object = None) -> httpx.Response:
    return c.post(
        f"{V3}/user/{quote(user_id)}/openid/request_token",
        headers={"Authorization": f"Bearer {token}"},
        json={} if body is None else body,
    )


def test_openid_tokens(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with running_server(config) as s:
        alice = s.register("alice")
        bob = s.register("bob")
        with s.client() as c:
            r = _request(c, alice["access_token"], alice["user_id"])
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["token_type"] == "Bearer"
            assert body["matrix_server_name"] == s.server_name
            assert body["expires_in"] == 3600
            token = body["access_token"]
            r = c.get(USERINFO, params={"access_token": token})
            assert r.status_code == 200, r.text
            assert r.json() == {"sub": alice["user_id"]}
            # Only for oneself: bob can't get a token that names alice.
            r = _request(c, bob["access_token"], alice["user_id"])
            assert r.status_code == 403
            assert r.json()["errcode"] == "M_FORBIDDEN"
            assert "access_token" not in r.json()
            r = _request(c, alice["access_token"], alice["user_id"], body=[1])
            assert r.status_code == 400
            assert (
                c.post(f"{V3}/user/{quote(alice['user_id'])}/openid/request_token").status_code
                == 401
            )
            # Bad, missing and wrong-kind tokens.
            for params, errcode in (
                ({"access_token": "nope"}, "M_UNKNOWN_TOKEN"),
                ({"access_token": alice["access_token"]}, "M_UNKNOWN_TOKEN"),
                ({}, "M_MISSING_TOKEN"),
            ):
                r = c.get(USERINFO, params=params)
                assert r.status_code == 401, params
                assert r.json()["errcode"] == errcode, params
            # An OpenID token is no access token.
            r = c.get(f"{V3}/account/whoami", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401
        log = s.log_text()
        assert token not in log
    # Kept in the database: a restart does not break a widget's token.
    with running_server(config) as s, s.client() as c:
        r = c.get(USERINFO, params={"access_token": token})
        assert r.json() == {"sub": alice["user_id"]}
        # A deactivated user's tokens stop working.
        auth = {"Authorization": f"Bearer {alice['access_token']}"}
        r = c.post(f"{V3}/account/deactivate", headers=auth, json={})
        session = r.json()["session"]
        r = c.post(
            f"{V3}/account/deactivate",
            headers=auth,
            json={
                "auth": {
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": "alice"},
                    "password": "correct horse",
                    "session": session,
                }
            },
        )
        assert r.status_code == 200, r.text
        r = c.get(USERINFO, params={"access_token": token})
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"
    assert "Traceback" not in s.log_text()
