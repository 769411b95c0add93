"""Accounts and sessions through the real server: registration with UIA, refresh tokens,
capabilities, password change, deactivation, devices and the 3PID answers."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"
PASSWORD = "correct horse"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Open registration; refreshable access tokens live 2 seconds."""
    config = make_config(
        tmp_path_factory.mktemp("accounts"),
        enable_registration=True,
        refreshable_access_token_lifetime="2s",
    )
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


@pytest.fixture
def name() -> str:
    return f"acct{next(_names)}"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _register(c: httpx.Client, username: str, **extra: object) -> dict[str, object]:
    """Register through /register: 401 with a session, then the dummy stage."""
    body: dict[str, object] = {"username": username, "password": PASSWORD, **extra}
    first = c.post(f"{V3}/register", json=body)
    assert first.status_code == 401, first.text
    session = first.json()["session"]
    r = c.post(
        f"{V3}/register", json={**body, "auth": {"type": "m.login.dummy", "session": session}}
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _password_auth(user_id: str, session: str, password: str = PASSWORD) -> dict[str, object]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
        "session": session,
    }


def _uia(
    c: httpx.Client, method: str, path: str, token: str | None, body: dict[str, object], user: str
) -> httpx.Response:
    """Do a UIA-protected request: the 401 with flows, then the password stage."""
    headers = _auth(token) if token else {}
    first = c.request(method, path, headers=headers, json=body)
    assert first.status_code == 401, first.text
    answer = first.json()
    assert answer["flows"] == [{"stages": ["m.login.password"]}]
    assert "errcode" not in answer
    return c.request(
        method,
        path,
        headers=headers,
        json={**body, "auth": _password_auth(user, answer["session"])},
    )


# --- registration -------------------------------------------------------------------


def test_register_uia_round_trip(server: RunningServer, name: str) -> None:
    with server.client() as c:
        first = c.post(f"{V3}/register", json={"username": name, "password": PASSWORD})
        assert first.status_code == 401
        body = first.json()
        assert body["flows"] == [{"stages": ["m.login.dummy"]}]
        assert body["params"] == {}
        assert isinstance(body["session"], str)
        assert "errcode" not in body
        assert "completed" not in body
        r = c.post(
            f"{V3}/register",
            json={
                "username": name,
                "password": PASSWORD,
                "device_id": "MYDEVICE",
                "initial_device_display_name": "Phone",
                "auth": {"type": "m.login.dummy", "session": body["session"]},
            },
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        user_id = f"@{name}:{server.server_name}"
        assert answer["user_id"] == user_id
        assert answer["device_id"] == "MYDEVICE"
        assert "refresh_token" not in answer
        assert "expires_in_ms" not in answer
        who = c.get(f"{V3}/account/whoami", headers=_auth(answer["access_token"])).json()
        assert who == {"user_id": user_id, "device_id": "MYDEVICE", "is_guest": False}
        profile = c.get(f"{V3}/profile/{user_id}").json()
        assert profile == {"displayname": name}
        dev = c.get(f"{V3}/devices/MYDEVICE", headers=_auth(answer["access_token"])).json()
        assert dev["display_name"] == "Phone"
        # A repeat of the completed session is idempotent (as Synapse, SyTest 11register):
        # the same account is logged in again, nothing new is registered.
        again = c.post(
            f"{V3}/register",
            json={
                "username": name.upper(),
                "auth": {"type": "m.login.dummy", "session": body["session"]},
            },
        )
        assert again.status_code == 200, again.text
        assert again.json()["user_id"] == user_id
        assert again.json()["device_id"] == "MYDEVICE"
        assert again.json()["access_token"] != answer["access_token"]
        who = c.get(f"{V3}/account/whoami", headers=_auth(again.json()["access_token"]))
        assert who.json()["user_id"] == user_id
        # ... but it cannot name another user ID.
        other = c.post(
            f"{V3}/register",
            json={
                "username": name + "x",
                "auth": {"type": "m.login.dummy", "session": body["session"]},
            },
        )
        assert other.status_code == 400
        assert c.get(f"{V3}/profile/@{name}x:{server.server_name}").status_code == 404
    assert server.login(name).status_code == 200


def test_register_idempotent_without_username(server: RunningServer) -> None:
    """SyTest 11register #100: a generated user ID, the session repeated."""
    with server.client() as c:
        sid = c.post(f"{V3}/register", json={"password": PASSWORD}).json()["session"]
        body = {"password": PASSWORD, "auth": {"type": "m.login.dummy", "session": sid}}
        first = c.post(f"{V3}/register", json=body)
        assert first.status_code == 200, first.text
        second = c.post(f"{V3}/register", json=body)
        assert second.status_code == 200, second.text
        assert second.json()["user_id"] == first.json()["user_id"]
        assert second.json()["access_token"] != first.json()["access_token"]


def test_register_downcases_username(server: RunningServer) -> None:
    """SyTest 10apidoc/01register #3: Synapse lowercases the requested username."""
    with server.client() as c:
        r = c.post(
            f"{V3}/register",
            json={
                "username": "User-UPPER",
                "password": PASSWORD,
                "auth": {"type": "m.login.dummy"},
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == f"@user-upper:{server.server_name}"
        # The same name in other capitals is then taken.
        r = c.post(
            f"{V3}/register",
            json={
                "username": "USER-upper",
                "password": PASSWORD,
                "auth": {"type": "m.login.dummy"},
            },
        )
        assert r.status_code == 400
        assert r.json()["errcode"] == "M_USER_IN_USE"
        # Characters outside the grammar stay refused after lowercasing.
        r = c.post(
            f"{V3}/register",
            json={"username": "ÉLAN", "password": PASSWORD, "auth": {"type": "m.login.dummy"}},
        )
        assert r.json()["errcode"] == "M_INVALID_USERNAME"


def test_register_in_one_request_without_session(server: RunningServer, name: str) -> None:
    """matrix-nio sends the dummy stage in its first request, with no session."""
    with server.client() as c:
        r = c.post(
            f"{V3}/register",
            json={"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}},
        )
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == f"@{name}:{server.server_name}"


def test_register_remembers_fields_of_first_request(server: RunningServer, name: str) -> None:
    with server.client() as c:
        first = c.post(f"{V3}/register", json={"username": name, "password": PASSWORD})
        session = first.json()["session"]
        r = c.post(f"{V3}/register", json={"auth": {"type": "m.login.dummy", "session": session}})
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == f"@{name}:{server.server_name}"


def test_register_probe_with_empty_body_gets_flows(server: RunningServer) -> None:
    with server.client() as c:
        r = c.post(f"{V3}/register", json={})
        assert r.status_code == 401
        assert r.json()["flows"] == [{"stages": ["m.login.dummy"]}]


def test_register_inhibit_login_and_generated_name(server: RunningServer) -> None:
    with server.client() as c:
        r = c.post(
            f"{V3}/register",
            json={"password": PASSWORD, "inhibit_login": True, "auth": {"type": "m.login.dummy"}},
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert set(answer) <= {"user_id", "home_server"}
        assert answer["user_id"].endswith(":" + server.server_name)
        localpart = answer["user_id"][1:].split(":")[0]
    assert server.login(localpart).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        ({"username": "Has Space"}, 400, "M_INVALID_USERNAME"),
        ({"username": "UPPER!"}, 400, "M_INVALID_USERNAME"),
        ({"username": "x" * 300}, 400, "M_INVALID_USERNAME"),
        ({"username": 5}, 400, "M_BAD_JSON"),
        ({"password": 5}, 400, "M_BAD_JSON"),
        ({"password": "x" * 513}, 400, "M_INVALID_PARAM"),
        ({"inhibit_login": "yes"}, 400, "M_BAD_JSON"),
        ({"device_id": ""}, 400, "M_INVALID_PARAM"),
        ({"initial_device_display_name": "n" * 300}, 400, "M_INVALID_PARAM"),
        ({"auth": "dummy"}, 400, "M_BAD_JSON"),
        ({"auth": {"type": "m.login.dummy", "session": "nope"}}, 400, "M_UNKNOWN"),
        ({"auth": {"type": 5}}, 400, "M_BAD_JSON"),
    ],
)
def test_register_bad_requests(server: RunningServer, body, status: int, errcode: str) -> None:
    with server.client() as c:
        r = c.post(f"{V3}/register", json=body)
        assert r.status_code == status, r.text
        assert r.json()["errcode"] == errcode


def test_register_unknown_stage_keeps_session(server: RunningServer, name: str) -> None:
    with server.client() as c:
        first = c.post(f"{V3}/register", json={"username": name, "password": PASSWORD}).json()
        r = c.post(
            f"{V3}/register",
            json={"auth": {"type": "m.login.recaptcha", "session": first["session"]}},
        )
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_UNRECOGNIZED"
        assert r.json()["session"] == first["session"]
        r = c.post(
            f"{V3}/register",
            json={"auth": {"type": "m.login.dummy", "session": first["session"]}},
        )
        assert r.status_code == 200, r.text


def test_register_user_in_use_before_auth(server: RunningServer, name: str) -> None:
    server.register(name)
    with server.client() as c:
        for username in (name, name.upper().lower()):
            r = c.post(f"{V3}/register", json={"username": username, "password": PASSWORD})
            assert r.status_code == 400
            assert r.json()["errcode"] == "M_USER_IN_USE"


def test_register_kind(server: RunningServer) -> None:
    with server.client() as c:
        r = c.post(f"{V3}/register?kind=guest", json={})
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
        r = c.post(f"{V3}/register?kind=admin", json={})
        assert r.status_code == 400
        assert r.json()["errcode"] == "M_INVALID_PARAM"


def test_register_available(server: RunningServer, name: str) -> None:
    with server.client() as c:
        r = c.get(f"{V3}/register/available", params={"username": name})
        assert r.status_code == 200
        assert r.json() == {"available": True}
        _register(c, name)
        r = c.get(f"{V3}/register/available", params={"username": name})
        assert r.status_code == 400
        assert r.json()["errcode"] == "M_USER_IN_USE"
        r = c.get(f"{V3}/register/available", params={"username": "Bad Name"})
        assert r.json()["errcode"] == "M_INVALID_USERNAME"
        r = c.get(f"{V3}/register/available")
        assert r.status_code == 400
        assert r.json()["errcode"] == "M_MISSING_PARAM"


def test_registration_disabled(tmp_path) -> None:
    with running_server(make_config(tmp_path)) as s, s.client() as c:
        r = c.post(f"{V3}/register", json={"username": "x", "password": PASSWORD})
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_FORBIDDEN"
        r = c.get(f"{V3}/register/available", params={"username": "x"})
        assert r.status_code == 403
        r = c.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=x")
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_FORBIDDEN"
        # Shared-secret registration still works.
        s.register("admin1")


def test_registration_rate_limited(tmp_path) -> None:
    config = make_config(
        tmp_path,
        enable_registration=True,
        rc_registration={"per_second": 0.001, "burst_count": 1},
    )
    with running_server(config) as s, s.client() as c:
        _register(c, "first")
        r = c.post(f"{V3}/register", json={"username": "second", "password": PASSWORD})
        assert r.status_code == 429
        assert r.json()["errcode"] == "M_LIMIT_EXCEEDED"
        assert r.json()["retry_after_ms"] > 0


# --- refresh tokens and soft logout --------------------------------------------------


def test_refresh_token_rotation(server: RunningServer, name: str) -> None:
    with server.client() as c:
        answer = _register(c, name, refresh_token=True)
        assert answer["expires_in_ms"] == 2000
        access, refresh = answer["access_token"], answer["refresh_token"]
        assert c.get(f"{V3}/account/whoami", headers=_auth(access)).status_code == 200
        r = c.post(f"{V3}/refresh", json={"refresh_token": refresh})
        assert r.status_code == 200, r.text
        new = r.json()
        assert new["expires_in_ms"] == 2000
        assert new["refresh_token"] != refresh
        # The old access token stopped working at once (a soft logout).
        r = c.get(f"{V3}/account/whoami", headers=_auth(access))
        assert (r.status_code, r.json()["soft_logout"]) == (401, True)
        # The answer was lost: repeating the refresh works, and the unused pair is void.
        r = c.post(f"{V3}/refresh", json={"refresh_token": refresh})
        assert r.status_code == 200, r.text
        lost, new = new, r.json()
        assert c.get(f"{V3}/account/whoami", headers=_auth(lost["access_token"])).status_code == 401
        who = c.get(f"{V3}/account/whoami", headers=_auth(new["access_token"])).json()
        assert who["device_id"] == answer["device_id"]
        # Once the new access token is used, the old refresh token is used up.
        r = c.post(f"{V3}/refresh", json={"refresh_token": refresh})
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"
        assert r.json()["soft_logout"] is False
        # Expiry: soft logout, then refreshing still works.
        time.sleep(2.2)
        r = c.get(f"{V3}/account/whoami", headers=_auth(new["access_token"]))
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"
        assert r.json()["soft_logout"] is True
        r = c.post(f"{V3}/refresh", json={"refresh_token": new["refresh_token"]})
        assert r.status_code == 200, r.text
        assert c.get(f"{V3}/account/whoami", headers=_auth(r.json()["access_token"])).is_success


def test_refresh_via_login_and_logout_kills_it(server: RunningServer, name: str) -> None:
    server.register(name)
    r = server.login(name, refresh_token=True)
    assert r.status_code == 200
    answer = r.json()
    assert answer["expires_in_ms"] == 2000
    with server.client() as c:
        assert c.post(f"{V3}/logout", headers=_auth(answer["access_token"])).is_success
        r = c.post(f"{V3}/refresh", json={"refresh_token": answer["refresh_token"]})
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"
        assert r.json()["soft_logout"] is False
    # Without refresh_token: true the token does not expire and no refresh token is given.
    plain = server.login(name).json()
    assert "refresh_token" not in plain
    assert "expires_in_ms" not in plain


@pytest.mark.parametrize(
    ("body", "errcode"),
    [({}, "M_MISSING_PARAM"), ({"refresh_token": 1}, "M_BAD_JSON")],
)
def test_refresh_bad_requests(server: RunningServer, body, errcode: str) -> None:
    with server.client() as c:
        r = c.post(f"{V3}/refresh", json=body)
        assert r.status_code == 400
        assert r.json()["errcode"] == errcode
        r = c.post(f"{V3}/refresh", json={"refresh_token": "pkr_unknown"})
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"


# --- capabilities ---------------------------------------------------------------------


def test_capabilities(server: RunningServer, name: str) -> None:
    token = server.register(name)["access_token"]
    with server.client() as c:
        assert c.get(f"{V3}/capabilities").status_code == 401
        caps = c.get(f"{V3}/capabilities", headers=_auth(token)).json()["capabilities"]
    versions = caps["m.room_versions"]
    assert versions["default"] == "12"
    assert versions["available"] == {str(v): "stable" for v in range(1, 13)}
    assert caps["m.change_password"] == {"enabled": True}
    assert caps["m.set_displayname"] == {"enabled": True}
    assert caps["m.set_avatar_url"] == {"enabled": True}
    assert caps["m.3pid_changes"] == {"enabled": False}
    assert caps["m.get_login_token"] == {"enabled": False}


def test_capabilities_follow_config(tmp_path) -> None:
    config = make_config(tmp_path, password_config={"enabled": False}, default_room_version="10")
    with running_server(config) as s:
        token = s.register("someone")["access_token"]
        with s.client() as c:
            caps = c.get(f"{V3}/capabilities", headers=_auth(token)).json()["capabilities"]
            # No password login: nothing can confirm the user's identity.
            for path, body in (
                ("/account/password", {"new_password": "x"}),
                ("/account/deactivate", {}),
            ):
                r = c.post(V3 + path, headers=_auth(token), json=body)
                assert r.status_code == 403
                assert r.json()["errcode"] == "M_FORBIDDEN"
            assert c.get(f"{V3}/account/whoami", headers=_auth(token)).is_success
    assert caps["m.change_password"] == {"enabled": False}
    assert caps["m.room_versions"]["default"] == "10"


# --- password change ------------------------------------------------------------------


def test_password_change_logs_out_other_devices(server: RunningServer, name: str) -> None:
    user_id = server.register(name)["user_id"]
    mine = server.login(name).json()
    other = server.login(name).json()
    with server.client() as c:
        # A wrong password: 401 with errcode, the session is kept.
        first = c.post(
            f"{V3}/account/password",
            headers=_auth(mine["access_token"]),
            json={"new_password": "new pw"},
        ).json()
        wrong = c.post(
            f"{V3}/account/password",
            headers=_auth(mine["access_token"]),
            json={
                "new_password": "new pw",
                "auth": _password_auth(user_id, first["session"], "no"),
            },
        )
        assert wrong.status_code == 401
        assert wrong.json()["errcode"] == "M_FORBIDDEN"
        assert wrong.json()["session"] == first["session"]
        assert wrong.json()["flows"] == [{"stages": ["m.login.password"]}]
        r = c.post(
            f"{V3}/account/password",
            headers=_auth(mine["access_token"]),
            json={"new_password": "new pw", "auth": _password_auth(user_id, first["session"])},
        )
        assert r.status_code == 200, r.text
        assert r.json() == {}
        assert c.get(f"{V3}/account/whoami", headers=_auth(mine["access_token"])).is_success
        r = c.get(f"{V3}/account/whoami", headers=_auth(other["access_token"]))
        assert r.status_code == 401
        devices = c.get(f"{V3}/devices", headers=_auth(mine["access_token"])).json()["devices"]
        assert [d["device_id"] for d in devices] == [mine["device_id"]]
    assert server.login(name).status_code == 403
    assert server.login(name, "new pw").status_code == 200


def test_password_change_keeping_devices(server: RunningServer, name: str) -> None:
    user_id = server.register(name)["user_id"]
    mine = server.login(name).json()
    other = server.login(name).json()
    with server.client() as c:
        r = _uia(
            c,
            "POST",
            f"{V3}/account/password",
            mine["access_token"],
            {"new_password": "new pw", "logout_devices": False},
            user_id,
        )
        assert r.status_code == 200, r.text
        assert c.get(f"{V3}/account/whoami", headers=_auth(other["access_token"])).is_success


def test_password_change_without_access_token(server: RunningServer, name: str) -> None:
    """The password stage names the user when no access token is sent."""
    user_id = server.register(name)["user_id"]
    token = server.login(name).json()["access_token"]
    with server.client() as c:
        r = _uia(c, "POST", f"{V3}/account/password", None, {"new_password": "pw2"}, user_id)
        assert r.status_code == 200, r.text
        assert c.get(f"{V3}/account/whoami", headers=_auth(token)).status_code == 401
    assert server.login(name, "pw2").status_code == 200


def test_password_stage_for_another_user_fails(server: RunningServer, name: str) -> None:
    me = server.register(name)
    other = server.register(name + "x")
    with server.client() as c:
        first = c.post(
            f"{V3}/account/password",
            headers=_auth(me["access_token"]),
            json={"new_password": "x"},
        ).json()
        r = c.post(
            f"{V3}/account/password",
            headers=_auth(me["access_token"]),
            json={"new_password": "x", "auth": _password_auth(other["user_id"], first["session"])},
        )
        assert r.status_code == 403  # refused outright, as Synapse (not a failed stage)
        assert r.json()["errcode"] == "M_FORBIDDEN"
        # Another user's token cannot take over the session.
        r = c.post(
            f"{V3}/account/password",
            headers=_auth(other["access_token"]),
            json={"new_password": "x", "auth": _password_auth(other["user_id"], first["session"])},
        )
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_FORBIDDEN"
    assert server.login(name).status_code == 200


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({}, "M_MISSING_PARAM"),
        ({"new_password": 1}, "M_BAD_JSON"),
        ({"new_password": "x", "logout_devices": "no"}, "M_BAD_JSON"),
    ],
)
def test_password_change_bad_requests(server: RunningServer, name: str, body, errcode) -> None:
    token = server.register(name)["access_token"]
    with server.client() as c:
        r = c.post(f"{V3}/account/password", headers=_auth(token), json=body)
        assert r.status_code == 400
        assert r.json()["errcode"] == errcode
        r = c.post(f"{V3}/account/password", headers=_auth("bogus"), json={"new_password": "x"})
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"


def test_password_stage_bad_auth_dicts(server: RunningServer, name: str) -> None:
    me = server.register(name)
    with server.client() as c:
        h = _auth(me["access_token"])
        first = c.post(f"{V3}/account/password", headers=h, json={"new_password": "x"}).json()
        sid = first["session"]
        for auth, status, errcode in [
            ({"type": "m.login.password", "session": sid, "password": "p"}, 400, "M_MISSING_PARAM"),
            (
                {"type": "m.login.password", "session": sid, "identifier": {"type": "m.id.user"}},
                400,
                "M_MISSING_PARAM",
            ),
            (
                {
                    "type": "m.login.password",
                    "session": sid,
                    "password": "p",
                    "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a"},
                },
                403,
                "M_FORBIDDEN",
            ),
            ({"type": "m.login.dummy", "session": sid}, 401, "M_UNRECOGNIZED"),
        ]:
            r = c.post(
                f"{V3}/account/password", headers=h, json={"new_password": "x", "auth": auth}
            )
            assert r.status_code == status, (auth, r.text)
            assert r.json()["errcode"] == errcode
    assert server.login(name).status_code == 200


# --- deactivation ---------------------------------------------------------------------


def test_deactivate_leaves_rooms_and_blocks_login(server: RunningServer, name: str) -> None:
    me = server.register(name)
    friend = server.register(name + "f")
    with server.client() as c:
        mine, theirs = _auth(me["access_token"]), _auth(friend["access_token"])
        c.put(
            f"{V3}/profile/{me['user_id']}/avatar_url",
            headers=mine,
            json={"avatar_url": "mxc://a/b"},
        )
        joined = c.post(f"{V3}/createRoom", headers=theirs, json={"preset": "public_chat"})
        room = joined.json()["room_id"]
        assert c.post(f"{V3}/join/{room}", headers=mine).is_success
        invited = c.post(
            f"{V3}/createRoom", headers=theirs, json={"invite": [me["user_id"]]}
        ).json()["room_id"]
        r = _uia(
            c,
            "POST",
            f"{V3}/account/deactivate",
            me["access_token"],
            {"erase": True},
            me["user_id"],
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"id_server_unbind_result": "no-support"}
        assert c.get(f"{V3}/account/whoami", headers=mine).status_code == 401
        for room_id in (room, invited):
            state = c.get(
                f"{V3}/rooms/{room_id}/state/m.room.member/{me['user_id']}", headers=theirs
            )
            assert state.json()["membership"] == "leave", (room_id, state.text)
        assert c.get(f"{V3}/profile/{me['user_id']}").json() == {}
        r = c.get(f"{V3}/register/available", params={"username": name})
        assert r.json()["errcode"] == "M_USER_IN_USE"
    r = server.login(name)
    assert r.status_code == 403
    assert r.json()["errcode"] == "M_USER_DEACTIVATED"
    assert server.login(name, "wrong").json()["errcode"] == "M_FORBIDDEN"


def test_deactivate_wrong_password_changes_nothing(server: RunningServer, name: str) -> None:
    me = server.register(name)
    with server.client() as c:
        h = _auth(me["access_token"])
        first = c.post(f"{V3}/account/deactivate", headers=h, json={})
        assert first.status_code == 401
        sid = first.json()["session"]
        r = c.post(
            f"{V3}/account/deactivate",
            headers=h,
            json={"auth": _password_auth(me["user_id"], sid, "wrong")},
        )
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_FORBIDDEN"
        # A wrong password in a first request (no session yet, as SyTest 14account/
        # 02deactivate sends it): the full UIA answer, with an empty "completed".
        auth = _password_auth(me["user_id"], sid, "wrong")
        del auth["session"]
        r = c.post(f"{V3}/account/deactivate", headers=h, json={"auth": auth})
        assert r.status_code == 401
        body = r.json()
        assert body["errcode"] == "M_FORBIDDEN"
        assert isinstance(body["error"], str)
        assert body["completed"] == []
        assert body["flows"] == [{"stages": ["m.login.password"]}]
        assert body["params"] == {}
        assert isinstance(body["session"], str)
        r = c.post(f"{V3}/account/deactivate", headers=h, json={"erase": "yes"})
        assert r.status_code == 400
        assert r.json()["errcode"] == "M_BAD_JSON"
        assert c.get(f"{V3}/account/whoami", headers=h).is_success
    assert server.login(name).status_code == 200


# --- devices ------------------------------------------------------------------------


def test_devices_list_get_rename(server: RunningServer, name: str) -> None:
    server.register(name)
    a = server.login(name, device_id="DEVA", initial_device_display_name="Laptop").json()
    b = server.login(name, device_id="DEVB").json()
    with server.client() as c:
        h = _auth(a["access_token"])
        devices = c.get(f"{V3}/devices", headers=h).json()["devices"]
        by_id = {d["device_id"]: d for d in devices}
        assert {"DEVA", "DEVB"} <= set(by_id)
        assert by_id["DEVA"]["display_name"] == "Laptop"
        assert by_id["DEVA"]["last_seen_ip"] == "127.0.0.1"
        assert by_id["DEVA"]["last_seen_ts"] > time.time() * 1000 - 60_000
        assert by_id["DEVB"]["display_name"] is None  # null, as Synapse (nio needs the key)
        assert c.put(f"{V3}/devices/DEVB", headers=h, json={"display_name": "Phone"}).json() == {}
        assert c.get(f"{V3}/devices/DEVB", headers=h).json()["display_name"] == "Phone"
        assert c.put(f"{V3}/devices/DEVB", headers=h, json={}).status_code == 200
        assert c.get(f"{V3}/devices/DEVB", headers=h).json()["display_name"] == "Phone"
        for method, kwargs in (("GET", {}), ("PUT", {"json": {"display_name": "x"}})):
            r = c.request(method, f"{V3}/devices/NOPE", headers=h, **kwargs)
            assert r.status_code == 404
            assert r.json()["errcode"] == "M_NOT_FOUND"
        r = c.put(f"{V3}/devices/DEVB", headers=h, json={"display_name": "n" * 300})
        assert r.status_code == 400
        assert r.json()["errcode"] == "M_INVALID_PARAM"
        r = c.put(f"{V3}/devices/DEVB", headers=h, json={"display_name": 3})
        assert r.json()["errcode"] == "M_BAD_JSON"
        # Another user's device is not found.
        other = server.register(name + "o")
        r = c.get(f"{V3}/devices/DEVA", headers=_auth(other["access_token"]))
        assert r.status_code == 404
        assert c.get(f"{V3}/devices").status_code == 401
    assert b["device_id"] == "DEVB"


def test_delete_device_kills_its_token(server: RunningServer, name: str) -> None:
    me = server.register(name)
    victim = server.login(name, device_id="OLDPHONE").json()
    with server.client() as c:
        h = _auth(me["access_token"])
        assert c.get(f"{V3}/account/whoami", headers=_auth(victim["access_token"])).is_success
        first = c.request("DELETE", f"{V3}/devices/OLDPHONE", headers=h)
        assert first.status_code == 401
        assert first.json()["flows"] == [{"stages": ["m.login.password"]}]
        r = _uia(c, "DELETE", f"{V3}/devices/OLDPHONE", me["access_token"], {}, me["user_id"])
        assert r.status_code == 200, r.text
        r = c.get(f"{V3}/account/whoami", headers=_auth(victim["access_token"]))
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"
        assert c.get(f"{V3}/devices/OLDPHONE", headers=h).status_code == 404
        # Deleting again (already gone) succeeds.
        r = _uia(c, "DELETE", f"{V3}/devices/OLDPHONE", me["access_token"], {}, me["user_id"])
        assert r.status_code == 200


def test_delete_devices_bulk(server: RunningServer, name: str) -> None:
    me = server.register(name)
    t1 = server.login(name, device_id="D1").json()["access_token"]
    t2 = server.login(name, device_id="D2").json()["access_token"]
    t3 = server.login(name, device_id="D3").json()["access_token"]
    with server.client() as c:
        for body, errcode in (({}, "M_MISSING_PARAM"), ({"devices": "D1"}, "M_BAD_JSON")):
            r = c.post(f"{V3}/delete_devices", headers=_auth(me["access_token"]), json=body)
            assert r.status_code == 400
            assert r.json()["errcode"] == errcode
        r = _uia(
            c,
            "POST",
            f"{V3}/delete_devices",
            me["access_token"],
            {"devices": ["D1", "D2", "NOSUCH"]},
            me["user_id"],
        )
        assert r.status_code == 200, r.text
        assert c.get(f"{V3}/account/whoami", headers=_auth(t1)).status_code == 401
        assert c.get(f"{V3}/account/whoami", headers=_auth(t2)).status_code == 401
        assert c.get(f"{V3}/account/whoami", headers=_auth(t3)).is_success


# --- 3PIDs ----------------------------------------------------------------------------


def test_threepids(server: RunningServer, name: str) -> None:
    h = _auth(server.register(name)["access_token"])
    email = {"client_secret": "secret", "email": "a@example.com", "send_attempt": 1}
    phone = {"client_secret": "s", "country": "GB", "phone_number": "0123", "send_attempt": 1}
    with server.client() as c:
        assert c.get(f"{V3}/account/3pid", headers=h).json() == {"threepids": []}
        assert c.get(f"{V3}/account/3pid").status_code == 401
        for path, body, status, errcode in [
            ("/register/email/requestToken", email, 403, "M_THREEPID_DENIED"),
            ("/register/msisdn/requestToken", phone, 403, "M_THREEPID_DENIED"),
            ("/account/password/email/requestToken", email, 403, "M_THREEPID_DENIED"),
            ("/account/password/msisdn/requestToken", phone, 403, "M_THREEPID_DENIED"),
            ("/account/3pid/email/requestToken", email, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"),
            ("/account/3pid/msisdn/requestToken", phone, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"),
            ("/register/email/requestToken", {"email": "a@b"}, 400, "M_MISSING_PARAM"),
            ("/register/email/requestToken", {**email, "send_attempt": "1"}, 400, "M_BAD_JSON"),
            (
                "/account/3pid/add",
                {"client_secret": "s", "sid": "x"},
                403,
                "M_THREEPID_AUTH_FAILED",
            ),
            ("/account/3pid/add", {"client_secret": "s"}, 400, "M_MISSING_PARAM"),
            (
                "/account/3pid",
                {"three_pid_creds": {"client_secret": "s", "sid": "x"}},
                403,
                "M_THREEPID_AUTH_FAILED",
            ),
            (
                "/account/3pid/bind",
                {"client_secret": "s", "id_server": "i", "id_access_token": "t", "sid": "x"},
                400,
                "M_SERVER_NOT_TRUSTED",
            ),
            ("/account/3pid/delete", {"medium": "email"}, 400, "M_MISSING_PARAM"),
            ("/account/3pid/delete", {"medium": "fax", "address": "1"}, 400, "M_INVALID_PARAM"),
        ]:
            r = c.post(V3 + path, headers=h, json=body)
            assert r.status_code == status, (path, r.text)
            assert r.json()["errcode"] == errcode, (path, r.text)
        for path in ("/account/3pid/delete", "/account/3pid/unbind"):
            r = c.post(V3 + path, headers=h, json={"medium": "email", "address": "a@example.com"})
            assert r.status_code == 200
            assert r.json() == {"id_server_unbind_result": "no-support"}


def test_errors_before_the_body_keep_the_connection_usable(server: RunningServer) -> None:
    """A 401 (no token) or 404 (unknown path) answered before the body was read must not
    leave the body in a keep-alive connection: the next request would hang."""
    with httpx.Client(base_url=server.base_url, timeout=5.0) as c:
        for _ in range(5):
            r = c.post(f"{V3}/account/3pid/add", json={"client_secret": "s", "sid": "x"})
            assert r.status_code == 401
            r = c.post(f"{V3}/no/such/endpoint", json={"x": "y" * 1000})
            assert r.status_code == 404
            r = c.post(f"{V3}/refresh", json={"refresh_token": "pkr_nope"})
            assert r.status_code == 401
