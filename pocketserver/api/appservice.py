"""Client-server endpoints only application services use (application service API,
"Client-Server API Extensions"): the ping and the services' published room lists."""

from __future__ import annotations

import time

from quart import Blueprint

from pocketserver.api.http import json_body, optional_str, require_appservice, services
from pocketserver.api.routes import client_route, client_v1_route
from pocketserver.appservice.client import app_path
from pocketserver.errors import MatrixError, forbidden, not_found

bp = Blueprint("appservice", __name__)


@client_v1_route(bp, "/appservice/<appservice_id>/ping", methods=["POST"])
async def ping(appservice_id: str) -> dict[str, object]:
    """``POST /_matrix/client/v1/appservice/{appserviceId}/ping`` (v1.7): the server
    calls the service's ``POST /_matrix/app/v1/ping`` and reports how long it took."""
    service = require_appservice()
    if service.id != appservice_id:
        raise forbidden("the access token is not that application service's")
    body = await json_body(allow_empty=True)
    txn_id = optional_str(body, "transaction_id")
    if service.url is None:
        raise MatrixError(400, "M_URL_NOT_SET", "the application service has no url")
    started = time.monotonic()
    answer = await services().appservices.client.request(
        service, "POST", app_path("ping"), body={} if txn_id is None else {"transaction_id": txn_id}
    )
    duration_ms = int((time.monotonic() - started) * 1000)
    if answer.status == 0:
        if answer.detail == "TooSlowError" or "Timeout" in answer.detail:
            raise MatrixError(504, "M_CONNECTION_TIMEOUT", "the application service timed out")
        raise MatrixError(
            502, "M_CONNECTION_FAILED", f"cannot reach the application service ({answer.detail})"
        )
    if not answer.ok:
        error = MatrixError(502, "M_BAD_STATUS", "the application service answered with an error")
        error.extra = {"status": answer.status, "body": str(answer.body)[:1000]}
        raise error
    return {"duration_ms": duration_ms}


async def _set_listed(network_id: str, room_id: str, listed: bool) -> None:
    service = require_appservice()
    s = services()
    if await s.room_store.room_version(room_id) is None:
        raise not_found("unknown room")
    await s.appservices.set_listed(service, network_id, room_id, listed)


@client_route(bp, "/directory/list/appservice/<network_id>/<room_id>", methods=["PUT"])
async def put_listed(network_id: str, room_id: str) -> dict[str, object]:
    """Publish a room in (or with ``visibility: private`` remove it from) the list of
    the service's network ``network_id`` (data/api/client-server/appservice_room_directory.yaml)."""
    body = await json_body()
    visibility = body.get("visibility")
    if visibility not in ("public", "private"):
        raise MatrixError(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
    await _set_listed(network_id, room_id, visibility == "public")
    return {}


@client_route(bp, "/directory/list/appservice/<network_id>/<room_id>", methods=["DELETE"])
async def delete_listed(network_id: str, room_id: str) -> dict[str, object]:
    """As Synapse: removes the room from the network's list."""
    await _set_listed(network_id, room_id, False)
    return {}
