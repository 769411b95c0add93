"""GET /admin/whois/{userId}: the user themself and server admins only (issue #9)."""

from __future__ import annotations

from urllib.parse import quote

from tests.harness import RunningServer

PATHS = ("/_matrix/client/v3/admin/whois/", "/_synapse/admin/v1/whois/")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_whois(server: RunningServer, new_user: str) -> None:
    me = server.register(new_user)
    other = server.register(f"{new_user}-other")
    admin = server.register(f"{new_user}-admin", admin=True)
    second = server.login(new_user).json()  # a second device
    hs = server.server_name
    with server.client() as c:
        # One authenticated request from the first device: it is seen now.
        c.headers["User-Agent"] = "whois-test/1.0"
        r = c.get("/_matrix/client/v3/account/whoami", headers=_auth(me["access_token"]))
        assert r.status_code == 200
        for path in PATHS:
            url = path + quote(me["user_id"])
            for token in (me["access_token"], admin["access_token"]):
                r = c.get(url, headers=_auth(token))
                assert r.status_code == 200, (url, r.text)
                body = r.json()
                assert body["user_id"] == me["user_id"]
                devices = body["devices"]
                assert set(devices) == {me["device_id"], second["device_id"]}
                (session,) = devices[me["device_id"]]["sessions"]
                (connection,) = session["connections"]
                assert connection["ip"] == "127.0.0.1"
                assert isinstance(connection["last_seen"], int)
                assert connection["user_agent"] == "whois-test/1.0"
            # Someone else (not an admin) is refused, existing user or not.
            for target in (me["user_id"], f"@nobody-{new_user}:{hs}", "@x:elsewhere.example"):
                r = c.get(path + quote(target), headers=_auth(other["access_token"]))
                assert r.status_code == 403, (path, target)
                assert r.json()["errcode"] == "M_FORBIDDEN"
            r = c.get(url)
            assert r.status_code == 401
            admin_auth = _auth(admin["access_token"])
            r = c.get(path + quote(f"@nobody-{new_user}:{hs}"), headers=admin_auth)
            assert r.status_code == 404
            assert r.json()["errcode"] == "M_NOT_FOUND"
            r = c.get(path + quote("@x:elsewhere.example"), headers=admin_auth)
            assert r.status_code == 400
