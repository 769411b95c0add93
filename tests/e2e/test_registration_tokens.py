"""Token-authenticated registration and Synapse's admin API for registration tokens."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"
ADMIN = "/_synapse/admin/v1/registration_tokens"
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"
FLOW = [{"stages": ["m.login.registration_token", "m.login.dummy"]}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("tokens"),
        enable_registration=True,
        registration_requires_token=True,
        rc_registration_token_validity={"per_second": 1000, "burst_count": 1000},
    )
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> dict[str, str]:
    token = server.register("tokenadmin", admin=True)["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _start(c: httpx.Client, username: str) -> str:
    r = c.post(f"{V3}/register", json={"username": username, "password": "pw"})
    assert r.status_code == 401, r.text
    assert r.json()["flows"] == FLOW
    return str(r.json()["session"])


def _token_stage(c: httpx.Client, session: str, token: str) -> httpx.Response:
    return c.post(
        f"{V3}/register",
        json={"auth": {"type": "m.login.registration_token", "token": token, "session": session}},
    )


def _dummy_stage(c: httpx.Client, session: str) -> httpx.Response:
    return c.post(f"{V3}/register", json={"auth": {"type": "m.login.dummy", "session": session}})


def _valid(c: httpx.Client, token: str) -> bool:
    r = c.get(VALIDITY, params={"token": token})
    assert r.status_code == 200, r.text
    return bool(r.json()["valid"])


def test_admin_api_needs_an_admin(server: RunningServer) -> None:
    user = server.register("notadmin")["access_token"]
    with server.client() as c:
        for method, path in [
            ("GET", ADMIN),
            ("POST", ADMIN + "/new"),
            ("GET", ADMIN + "/abc"),
            ("PUT", ADMIN + "/abc"),
            ("DELETE", ADMIN + "/abc"),
        ]:
            r = c.request(method, path, headers={"Authorization": f"Bearer {user}"}, json={})
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["errcode"] == "M_FORBIDDEN"
            r = c.request(method, path, json={})
            assert r.status_code == 401
            assert r.json()["errcode"] == "M_MISSING_TOKEN"


def test_token_flow_with_limited_uses(server: RunningServer, admin) -> None:
    with server.client() as c:
        r = c.post(ADMIN + "/new", headers=admin, json={"token": "once", "uses_allowed": 1})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "token": "once",
            "uses_allowed": 1,
            "pending": 0,
            "completed": 0,
            "expiry_time": None,
        }
        assert _valid(c, "once")
        session = _start(c, "tokenuser1")
        # The dummy stage comes second; a wrong token fails the stage, keeping the session.
        r = _dummy_stage(c, session)
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_FORBIDDEN"
        r = _token_stage(c, session, "wrong")
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_FORBIDDEN"
        assert r.json()["session"] == session
        assert r.json()["flows"] == FLOW
        r = _token_stage(c, session, "once")
        assert r.status_code == 401
        assert r.json()["completed"] == ["m.login.registration_token"]
        assert "errcode" not in r.json()
        r = _dummy_stage(c, session)
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == f"@tokenuser1:{server.server_name}"
        got = c.get(ADMIN + "/once", headers=admin).json()
        assert (got["pending"], got["completed"]) == (0, 1)
        assert not _valid(c, "once")
        other = _start(c, "tokenuser2")
        r = _token_stage(c, other, "once")
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_FORBIDDEN"
        # Raising the limit makes the token usable again.
        r = c.put(ADMIN + "/once", headers=admin, json={"uses_allowed": 2})
        assert r.json()["uses_allowed"] == 2
        assert _token_stage(c, other, "once").status_code == 401
        assert _dummy_stage(c, other).status_code == 200
        assert c.get(ADMIN + "/once", headers=admin).json()["completed"] == 2


def test_pending_use_is_reserved(server: RunningServer, admin) -> None:
    with server.client() as c:
        c.post(ADMIN + "/new", headers=admin, json={"token": "shared", "uses_allowed": 1})
        a = _start(c, "pendinga")
        assert _token_stage(c, a, "shared").status_code == 401
        got = c.get(ADMIN + "/shared", headers=admin).json()
        assert (got["pending"], got["completed"]) == (1, 0)
        assert not _valid(c, "shared")
        b = _start(c, "pendingb")
        assert _token_stage(c, b, "shared").json()["errcode"] == "M_FORBIDDEN"
        # The first session completes (the fields of its first request are remembered).
        r = _dummy_stage(c, a)
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == f"@pendinga:{server.server_name}"
        got = c.get(ADMIN + "/shared", headers=admin).json()
        assert (got["pending"], got["completed"]) == (0, 1)
        # Repeating the completed session logs the same user in again; no second use.
        again = _dummy_stage(c, a)
        assert again.status_code == 200, again.text
        assert again.json()["user_id"] == f"@pendinga:{server.server_name}"
        got = c.get(ADMIN + "/shared", headers=admin).json()
        assert (got["pending"], got["completed"]) == (0, 1)
        # A completed stage is not asked again: an auth dict with only the session
        # finishes a session whose flow is complete but whose request failed.
        c.post(ADMIN + "/new", headers=admin, json={"token": "again"})
        d = c.post(f"{V3}/register", json={"username": "pendingd"}).json()["session"]
        assert _token_stage(c, d, "again").status_code == 401
        r = _dummy_stage(c, d)
        assert r.status_code == 400
        assert r.json()["errcode"] == "M_MISSING_PARAM"
        r = c.post(f"{V3}/register", json={"password": "pw", "auth": {"session": d}})
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == f"@pendingd:{server.server_name}"


def test_admin_api_crud_and_errors(server: RunningServer, admin) -> None:
    with server.client() as c:
        r = c.post(ADMIN + "/new", headers=admin, json={"length": 8})
        generated = r.json()["token"]
        assert len(generated) == 8
        default = c.post(ADMIN + "/new", headers=admin).json()["token"]
        assert len(default) == 16
        soon = int(time.time() * 1000) + 1500
        r = c.post(ADMIN + "/new", headers=admin, json={"token": "soon", "expiry_time": soon})
        assert r.json()["expiry_time"] == soon
        for body in [
            {"token": "bad token"},
            {"token": "x" * 65},
            {"token": 5},
            {"token": generated},
            {"uses_allowed": -1},
            {"uses_allowed": "1"},
            {"expiry_time": 1000},
            {"length": 0},
            {"length": 65},
            {"length": True},
        ]:
            r = c.post(ADMIN + "/new", headers=admin, json=body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["errcode"] == "M_INVALID_PARAM"
        listed = c.get(ADMIN, headers=admin).json()["registration_tokens"]
        assert {generated, default, "soon"} <= {t["token"] for t in listed}
        r = c.put(ADMIN + f"/{generated}", headers=admin, json={"uses_allowed": 0})
        assert r.json()["uses_allowed"] == 0
        invalid = {
            t["token"]
            for t in c.get(ADMIN, headers=admin, params={"valid": "false"}).json()[
                "registration_tokens"
            ]
        }
        valid = {
            t["token"]
            for t in c.get(ADMIN, headers=admin, params={"valid": "true"}).json()[
                "registration_tokens"
            ]
        }
        assert generated in invalid
        assert default in valid
        assert c.get(ADMIN, headers=admin, params={"valid": "maybe"}).status_code == 400
        r = c.put(ADMIN + "/nosuch", headers=admin, json={"uses_allowed": 1})
        assert r.status_code == 404
        assert r.json()["errcode"] == "M_NOT_FOUND"
        r = c.put(ADMIN + f"/{default}", headers=admin, json={"expiry_time": 5})
        assert r.json()["errcode"] == "M_INVALID_PARAM"
        assert c.get(ADMIN + "/nosuch", headers=admin).status_code == 404
        assert c.delete(ADMIN + f"/{default}", headers=admin).json() == {}
        assert c.delete(ADMIN + f"/{default}", headers=admin).status_code == 404
        assert c.get(ADMIN + f"/{default}", headers=admin).status_code == 404
        assert _valid(c, "soon")
        time.sleep(1.6)
        assert not _valid(c, "soon")


def test_validity_errors(server: RunningServer) -> None:
    with server.client() as c:
        r = c.get(VALIDITY)
        assert r.status_code == 400
        assert r.json()["errcode"] == "M_MISSING_PARAM"
        assert not _valid(c, "never created")


def test_validity_rate_limited(tmp_path) -> None:
    config = make_config(
        tmp_path,
        enable_registration=True,
        rc_registration_token_validity={"per_second": 0.001, "burst_count": 2},
    )
    with running_server(config) as s, s.client() as c:
        assert c.get(VALIDITY, params={"token": "a"}).status_code == 200
        assert c.get(VALIDITY, params={"token": "b"}).status_code == 200
        r = c.get(VALIDITY, params={"token": "c"})
        assert r.status_code == 429
        assert r.json()["errcode"] == "M_LIMIT_EXCEEDED"
