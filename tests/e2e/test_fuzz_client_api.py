"""Fuzzing the client-server API from the spec's own OpenAPI definitions (schemathesis).

Requests for every operation in ../shared/matrix-spec/openapi/client-server.json, both
valid ones and deliberately malformed ones (wrong types, missing fields, huge values,
bad IDs), are sent to the real server. No answer may be a 5xx, and every 4xx must
carry a Matrix ``errcode`` (except the first 401 of User-Interactive Auth, which the
spec defines without one). The server offers the optional parts too (guest access,
login tokens), and a second pass sends everything with a guest's access token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import hypothesis
import pytest

from tests.harness import RunningServer, make_config, running_server

schemathesis = pytest.importorskip("schemathesis")

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "matrix-spec" / "openapi" / "client-server.json"

# Operations that would end the session the fuzzer uses (they have their own tests).
SESSION_ENDING = (
    r"/logout$|/logout/all$|/account/deactivate$|/account/password$|/delete_devices$"
    r"|/devices/\{deviceId\}$|/refresh$|/login$|/register$"
)

if not SPEC.exists():  # pragma: no cover - the shared folder is always beside CI's clone
    pytest.skip(f"no OpenAPI spec at {SPEC}", allow_module_level=True)

schema = schemathesis.openapi.from_path(str(SPEC)).exclude(path_regex=SESSION_ENDING)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("fuzz"),
        allow_guest_access=True,
        login_via_existing_session={"enabled": True},
        # Invites by email address would ask the identity servers the fuzzer names
        # (matrix.org, random names): no traffic leaves loopback in tests.
        enable_3pid_lookup=False,
        # Joins, alias lookups, profiles, directories, keys and media through the servers
        # it names would reach them: federate with no one (403 before anything is sent).
        federation_domain_whitelist=[],
    )
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


@pytest.fixture(scope="module")
def fuzz_token(server: RunningServer) -> str:
    return str(server.register("fuzzer")["access_token"])


@pytest.fixture(scope="module")
def guest_token(server: RunningServer) -> str:
    r = httpx.post(f"{server.base_url}/_matrix/client/v3/register?kind=guest", json={})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


SETTINGS = hypothesis.settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
    database=None,
)


@schema.parametrize()
@SETTINGS
def test_no_server_errors_and_every_4xx_has_an_errcode(case, server, fuzz_token) -> None:
    _check(case, server, fuzz_token)


@schema.parametrize()
@hypothesis.settings(SETTINGS, max_examples=2)
def test_as_a_guest(case, server, guest_token) -> None:
    _check(case, server, guest_token)


def _check(case, server: RunningServer, token: str) -> None:
    if case.query and "timeout" in case.query:
        case.query["timeout"] = 0  # no long-polls while fuzzing
    headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    response = case.call(base_url=server.base_url, headers=headers, timeout=30)
    where = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, f"{where} -> {response.status_code}: {response.text[:300]}"
    if 400 <= response.status_code < 500:
        try:
            body = json.loads(response.text)
        except ValueError:
            pytest.fail(f"{where} -> {response.status_code} without a JSON body")
        uia_challenge = response.status_code == 401 and "flows" in body
        assert uia_challenge or isinstance(body.get("errcode"), str), (
            f"{where} -> {response.status_code} without errcode: {response.text[:300]}"
        )
