"""Access tokens in the query string (?access_token=): accepted by default as Synapse
does, never written to the log, refused beside a header, and off with
``allow_access_token_in_query: false``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import RunningServer, make_config, running_server

WHOAMI = "/_matrix/client/v3/account/whoami"


def test_query_token_is_accepted_and_never_logged(server: RunningServer, new_user: str) -> None:
    body = server.register(new_user)
    token = body["access_token"]
    with server.client() as c:
        r = c.get(WHOAMI, params={"access_token": token})
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == body["user_id"]
        # A write with the query token lands (and is attributed to the user).
        r = c.put(
            f"/_matrix/client/v3/user/{body['user_id']}/account_data/org.example.q",
            params={"access_token": token},
            json={"q": 1},
        )
        assert r.status_code == 200, r.text
        r = c.get(
            f"/_matrix/client/v3/user/{body['user_id']}/account_data/org.example.q",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.json() == {"q": 1}
        r = c.get(WHOAMI, params={"access_token": "nope"})
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"
    log = server.log_text()
    assert WHOAMI in log
    assert token not in log
    assert "access_token" not in log


def test_header_and_query_together_are_refused(server: RunningServer, new_user: str) -> None:
    token = server.register(new_user)["access_token"]
    with server.client() as c:
        r = c.get(
            WHOAMI,
            params={"access_token": token},
            headers={"Authorization": f"Bearer {token}"},
        )
    # Synapse's get_access_token_from_request: MissingClientTokenError, 401.
    assert r.status_code == 401
    assert r.json()["errcode"] == "M_MISSING_TOKEN"


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(tmp_path_factory.mktemp("strict"), allow_access_token_in_query=False)
    with running_server(config) as s:
        yield s


def test_query_tokens_can_be_turned_off(strict_server: RunningServer) -> None:
    body = strict_server.register("strict")
    token = body["access_token"]
    user = body["user_id"]
    with strict_server.client() as c:
        r = c.get(WHOAMI, params={"access_token": token})
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_MISSING_TOKEN"
        url = f"/_matrix/client/v3/user/{user}/account_data/org.example.q"
        r = c.put(url, params={"access_token": token}, json={"q": 1})
        assert r.status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert c.get(url, headers=auth).status_code == 404  # nothing was stored
        # The header still works; a query token beside it is ignored, not an error.
        r = c.get(WHOAMI, headers=auth, params={"access_token": token})
        assert r.status_code == 200, r.text
    assert token not in strict_server.log_text()
