"""``POST /login/get_token`` and ``m.login.token`` through the real server, with
matrix-nio logging in a new device from a token."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import httpx
import nio
import pytest

from tests.harness import RunningServer, make_config, running_server

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"
PASSWORD = "correct horse"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("login_tokens"),
        login_via_existing_session={"enabled": True, "token_timeout": "3s"},
    )
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


@pytest.fixture
def user(server: RunningServer) -> dict[str, str]:
    return server.register(f"tok{next(_names)}", PASSWORD)


def _auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


def _get_token(c: httpx.Client, user: dict[str, str], password: str = PASSWORD) -> httpx.Response:
    """The UIA round trip: 401 with a session, then the password stage."""
    first = c.post(f"{V1}/login/get_token", headers=_auth(user), json={})
    assert first.status_code == 401, first.text
    assert first.json()["flows"] == [{"stages": ["m.login.password"]}]
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user["user_id"]},
        "password": password,
        "session": first.json()["session"],
    }
    return c.post(f"{V1}/login/get_token", headers=_auth(user), json={"auth": auth})


def _token_login(c: httpx.Client, token: str, **extra: object) -> httpx.Response:
    return c.post(f"{V3}/login", json={"type": "m.login.token", "token": token, **extra})


def test_flows_and_capability_advertise_it(server: RunningServer, user: dict[str, str]) -> None:
    with server.client() as c:
        flows = c.get(f"{V3}/login").json()["flows"]
        assert {"type": "m.login.token", "get_login_token": True} in flows
        assert {"type": "m.login.password"} in flows
        caps = c.get(f"{V3}/capabilities", headers=_auth(user)).json()["capabilities"]
        assert caps["m.get_login_token"] == {"enabled": True}


def test_token_logs_in_a_new_device_once(server: RunningServer, user: dict[str, str]) -> None:
    with server.client() as c:
        r = _get_token(c, user)
        assert r.status_code == 200, r.text
        token, lifetime = r.json()["login_token"], r.json()["expires_in_ms"]
        assert lifetime == 3000
        login = _token_login(c, token, initial_device_display_name="phone")
        assert login.status_code == 200, login.text
        session = login.json()
        assert session["user_id"] == user["user_id"]
        assert session["device_id"] != user["device_id"]
        whoami = c.get(f"{V3}/account/whoami", headers=_auth(session)).json()
        assert whoami["device_id"] == session["device_id"]
        devices = c.get(f"{V3}/devices", headers=_auth(user)).json()["devices"]
        assert {"phone"} <= {d.get("display_name") for d in devices}
        # Single use.
        again = _token_login(c, token)
        assert again.status_code == 403, again.text
        assert again.json()["errcode"] == "M_FORBIDDEN"


def test_every_token_needs_the_password_and_is_rate_limited(
    server: RunningServer, user: dict[str, str]
) -> None:
    with server.client() as c:
        wrong = _get_token(c, user, password="not it")
        assert wrong.status_code == 401, wrong.text
        assert wrong.json()["errcode"] == "M_FORBIDDEN"
        assert _get_token(c, user).status_code == 200
        # A second token within the minute: 429 before any password prompt.
        r = c.post(f"{V1}/login/get_token", headers=_auth(user), json={})
        assert r.status_code == 429, r.text
        assert r.json()["errcode"] == "M_LIMIT_EXCEEDED"
        assert r.json()["retry_after_ms"] > 0


def test_expired_unknown_and_malformed_tokens(server: RunningServer, user: dict[str, str]) -> None:
    with server.client() as c:
        token = _get_token(c, user).json()["login_token"]
        for bad in ("", "plt_nope", token + "x"):
            r = _token_login(c, bad)
            assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), r.text
        r = c.post(f"{V3}/login", json={"type": "m.login.token"})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_MISSING_PARAM"), r.text
        r = c.post(f"{V3}/login", json={"type": "m.login.token", "token": 7})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON"), r.text
        # The bad attempts did not use the token up; time does.
        time.sleep(3.2)
        r = _token_login(c, token)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), r.text


def test_deactivated_account_cannot_use_its_token(
    server: RunningServer, user: dict[str, str]
) -> None:
    with server.client() as c:
        token = _get_token(c, user).json()["login_token"]
        first = c.post(f"{V3}/account/deactivate", headers=_auth(user), json={})
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user["user_id"]},
            "password": PASSWORD,
            "session": first.json()["session"],
        }
        r = c.post(f"{V3}/account/deactivate", headers=_auth(user), json={"auth": auth})
        assert r.status_code == 200, r.text
        r = _token_login(c, token)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_USER_DEACTIVATED"), r.text


def test_nio_logs_in_with_a_token(server: RunningServer, user: dict[str, str]) -> None:
    with server.client() as c:
        token = _get_token(c, user).json()["login_token"]

    async def scenario() -> None:
        client = nio.AsyncClient(server.base_url, user["user_id"])
        try:
            resp = await client.login(token=token, device_name="nio from token")
            assert isinstance(resp, nio.LoginResponse), resp
            assert resp.user_id == user["user_id"]
            whoami = await client.whoami()
            assert isinstance(whoami, nio.WhoamiResponse), whoami
            assert whoami.device_id == resp.device_id
        finally:
            await client.close()

    asyncio.run(scenario())


def test_disabled_by_default(tmp_path) -> None:
    with running_server(make_config(tmp_path)) as s:
        user = s.register("plain", PASSWORD)
        with s.client() as c:
            assert c.get(f"{V3}/login").json()["flows"] == [{"type": "m.login.password"}]
            caps = c.get(f"{V3}/capabilities", headers=_auth(user)).json()["capabilities"]
            assert caps["m.get_login_token"] == {"enabled": False}
            r = c.post(f"{V1}/login/get_token", headers=_auth(user), json={})
            assert (r.status_code, r.json()["errcode"]) == (404, "M_UNRECOGNIZED"), r.text
            r = _token_login(c, "plt_anything")
            assert (r.status_code, r.json()["errcode"]) == (400, "M_UNKNOWN"), r.text
            r = c.post(f"{V1}/login/get_token", json={})
            assert (r.status_code, r.json()["errcode"]) == (401, "M_MISSING_TOKEN"), r.text
