"""The app's error shape, in process: an unexpected exception is M_UNKNOWN 500 with an id."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pocketserver.app import create_app
from pocketserver.config import load_config
from pocketserver.errors import MatrixError
from pocketserver.services import build_services
from tests.harness import make_config


@pytest.fixture
async def app(tmp_path: Path):
    services = await build_services(load_config(make_config(tmp_path)))
    app = create_app(services)

    @app.route("/boom")
    async def boom() -> dict[str, object]:
        raise RuntimeError("kaboom")

    @app.route("/teapot")
    async def teapot() -> dict[str, object]:
        raise MatrixError(418, "M_TEAPOT", "short and stout", extra_field=1)

    yield app
    services.db.close()


async def test_unexpected_exception_is_m_unknown(app, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pocketserver.app")
    r = await app.test_client().get("/boom")
    assert r.status_code == 500
    body = await r.get_json()
    assert body["errcode"] == "M_UNKNOWN"
    request_id = body["error"].rsplit("(", 1)[1].rstrip(")")
    assert request_id.startswith("req-")
    assert any(request_id in rec.getMessage() for rec in caplog.records)
    assert "kaboom" in caplog.text


async def test_matrix_error_shape(app) -> None:
    r = await app.test_client().get("/teapot")
    assert r.status_code == 418
    assert await r.get_json() == {
        "errcode": "M_TEAPOT",
        "error": "short and stout",
        "extra_field": 1,
    }
    assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_resources_split_routes(tmp_path: Path) -> None:
    services = await build_services(load_config(make_config(tmp_path)))
    try:
        federation_only = create_app(services, ["federation"])
        client = federation_only.test_client()
        assert (await client.get("/_matrix/key/v2/server")).status_code == 200
        assert (await client.get("/_matrix/client/versions")).status_code == 404
        client_only = create_app(services, ["client"]).test_client()
        assert (await client_only.get("/_matrix/client/versions")).status_code == 200
        assert (await client_only.get("/_matrix/key/v2/server")).status_code == 404
    finally:
        services.db.close()
