"""Third-party lookups through the real server: no application services, so no protocols."""

from __future__ import annotations

import pytest

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"


@pytest.fixture
def auth(server: RunningServer, new_user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.register(new_user)['access_token']}"}


def test_no_protocols(server: RunningServer, auth: dict[str, str]) -> None:
    with server.client() as c:
        assert c.get(f"{V3}/thirdparty/protocols", headers=auth).json() == {}
        r = c.get(f"{V3}/thirdparty/protocol/irc", headers=auth)
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
        for path in (
            "/thirdparty/location/irc?searchFields=x",
            "/thirdparty/user/irc",
            "/thirdparty/location?alias=%23room:test.local",
            "/thirdparty/user?userid=@someone:test.local",
        ):
            r = c.get(V3 + path, headers=auth)
            assert (r.status_code, r.json()) == (200, []), path


@pytest.mark.parametrize(
    ("path", "status", "errcode"),
    [
        ("/thirdparty/location", 400, "M_MISSING_PARAM"),
        ("/thirdparty/user", 400, "M_MISSING_PARAM"),
    ],
)
def test_reverse_lookups_need_their_parameter(
    server: RunningServer, auth: dict[str, str], path: str, status: int, errcode: str
) -> None:
    with server.client() as c:
        r = c.get(V3 + path, headers=auth)
        assert (r.status_code, r.json()["errcode"]) == (status, errcode)


def test_needs_an_access_token(server: RunningServer) -> None:
    with server.client() as c:
        r = c.get(f"{V3}/thirdparty/protocols")
        assert (r.status_code, r.json()["errcode"]) == (401, "M_MISSING_TOKEN")
