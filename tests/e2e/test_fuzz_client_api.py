"""Fuzzing the client-server API from the spec's own OpenAPI definitions (schemathesis).

Requests for every operation in ../shared/matrix-spec/openapi/client-server.json, both
valid ones and deliberately malformed ones (wrong types, missing fields, huge values,
bad IDs), are sent to the real server. No answer may be a 5xx, and every 4xx must
carry a Matrix ``errcode`` (except the first 401 of User-Interactive Auth, which the
spec defines without one).
"""

from __future__ import annotations

import json
from pathlib import Path

import hypothesis
import pytest

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
def fuzz_token(server) -> str:
    return str(server.register("fuzzer")["access_token"])


@schema.parametrize()
@hypothesis.settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
    database=None,
)
def test_no_server_errors_and_every_4xx_has_an_errcode(case, server, fuzz_token) -> None:
    if case.query and "timeout" in case.query:
        case.query["timeout"] = 0  # no long-polls while fuzzing
    headers = {**(case.headers or {}), "Authorization": f"Bearer {fuzz_token}"}
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
