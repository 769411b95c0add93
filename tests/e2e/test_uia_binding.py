"""A user-interactive authentication session serves the one request it was started
for: a password confirmed while deleting one device cannot delete another, and
another account's password is refused outright (403, as Synapse)."""

from __future__ import annotations

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"
PASSWORD = "correct horse"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _password(user_id: str, session: str | None = None, password: str = PASSWORD) -> dict:
    auth: dict[str, object] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    }
    if session is not None:
        auth["session"] = session
    return auth


def _login(server: RunningServer, name: str, device_id: str) -> str:
    r = server.login(name, device_id=device_id)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _device_ids(server: RunningServer, token: str) -> set[str]:
    with server.client() as c:
        r = c.get(f"{V3}/devices", headers=_auth(token))
    assert r.status_code == 200
    return {d["device_id"] for d in r.json()["devices"]}


def test_session_started_for_one_device_cannot_delete_another(
    server: RunningServer, new_user: str
) -> None:
    token = server.register(new_user)["access_token"]
    user_id = f"@{new_user}:{server.server_name}"
    _login(server, new_user, "FIRST")
    _login(server, new_user, "SECOND")
    with server.client() as c:
        first = c.request("DELETE", f"{V3}/devices/FIRST", headers=_auth(token), json={})
        assert first.status_code == 401
        session = first.json()["session"]
        # The session (started for FIRST) with a right password, for SECOND: refused.
        r = c.request(
            "DELETE",
            f"{V3}/devices/SECOND",
            headers=_auth(token),
            json={"auth": _password(user_id, session)},
        )
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_FORBIDDEN"
        assert {"FIRST", "SECOND"} <= _device_ids(server, token)
        # /delete_devices: a session started for one list cannot delete another list.
        started = c.post(f"{V3}/delete_devices", headers=_auth(token), json={"devices": ["FIRST"]})
        assert started.status_code == 401
        r = c.post(
            f"{V3}/delete_devices",
            headers=_auth(token),
            json={
                "devices": ["FIRST", "SECOND"],
                "auth": _password(user_id, started.json()["session"]),
            },
        )
        assert r.status_code == 403
        assert {"FIRST", "SECOND"} <= _device_ids(server, token)
        # The session it was started for still works.
        r = c.request(
            "DELETE",
            f"{V3}/devices/FIRST",
            headers=_auth(token),
            json={"auth": _password(user_id, session)},
        )
        assert r.status_code == 200, r.text
        ids = _device_ids(server, token)
        assert "FIRST" not in ids
        assert "SECOND" in ids


def test_another_accounts_password_is_refused(server: RunningServer, new_user: str) -> None:
    alice = server.register(new_user)["access_token"]
    eve_name = f"{new_user}eve"
    server.register(eve_name)
    _login(server, new_user, "VICTIM")
    with server.client() as c:
        # Eve, with Alice's stolen token, confirms with her own password: 403.
        r = c.request(
            "DELETE",
            f"{V3}/devices/VICTIM",
            headers=_auth(alice),
            json={"auth": _password(f"@{eve_name}:{server.server_name}")},
        )
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_FORBIDDEN"
        assert "VICTIM" in _device_ids(server, alice)
        r = c.request(
            "DELETE",
            f"{V3}/devices/VICTIM",
            headers=_auth(alice),
            json={"auth": _password(f"@{new_user}:{server.server_name}")},
        )
        assert r.status_code == 200, r.text
        assert "VICTIM" not in _device_ids(server, alice)
