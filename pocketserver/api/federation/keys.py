"""``/_matrix/key/v2/server``, the notary's ``/_matrix/key/v2/query``, and
``/_matrix/federation/v1/version``. None of them needs a signed request (SyTest:
"Federation key API allows unsigned requests for keys")."""

from __future__ import annotations

import time

from quart import Blueprint, request

from pocketserver import __version__
from pocketserver.api.federation.auth import public
from pocketserver.api.http import json_body, services
from pocketserver.errors import MatrixError, invalid_param
from pocketserver.federation.notary import MAX_SERVERS_PER_QUERY, KeyQuery, answer_query

bp = Blueprint("keys", __name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _own_valid_until(now: int) -> int:
    return now + services().config.key_refresh_interval_ms


@bp.get("/_matrix/key/v2/server")
@bp.get("/_matrix/key/v2/server/<key_id>")
async def server_keys(key_id: str | None = None) -> dict[str, object]:
    """server-server-api.md "Publishing Keys": this server's keys (``old_signing_keys``
    as ``old_verify_keys``), signed by itself, valid for ``key_refresh_interval``.

    The ``key_id`` path form is deprecated; the whole response is returned either way.
    """
    return services().keyring.own_keys_response(_own_valid_until(_now_ms()))


def _minimum(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MatrixError(400, "M_BAD_JSON", f"{where}: minimum_valid_until_ts must be an integer")
    return value


async def _answer(query: KeyQuery) -> dict[str, object]:
    if len(query) > MAX_SERVERS_PER_QUERY:
        raise invalid_param(f"at most {MAX_SERVERS_PER_QUERY} servers per query")
    now = _now_ms()
    keys = await answer_query(services().keyring, query, now, _own_valid_until(now))
    return {"server_keys": keys}


@bp.get("/_matrix/key/v2/query/<server_name>")
@bp.get("/_matrix/key/v2/query/<server_name>/<key_id>")
async def query_one(server_name: str, key_id: str | None = None) -> dict[str, object]:
    """keys_query.yaml ``GET /query/{serverName}`` (the ``/{keyId}`` form is the
    deprecated one SyTest and old Synapse still send)."""
    raw = request.args.get("minimum_valid_until_ts")
    minimum = None
    if raw is not None:
        try:
            minimum = int(raw)
        except ValueError:
            raise invalid_param("minimum_valid_until_ts must be an integer") from None
    return await _answer({server_name: {key_id or "": minimum}})


@bp.post("/_matrix/key/v2/query")
async def query_many() -> dict[str, object]:
    """keys_query.yaml ``POST /query``: ``{"server_keys": {server: {key_id:
    {"minimum_valid_until_ts": ts}}}}``; no key IDs for a server asks for all."""
    body = await json_body()
    servers = body.get("server_keys")
    if not isinstance(servers, dict):
        raise MatrixError(400, "M_BAD_JSON", "server_keys must be an object")
    query: dict[str, dict[str, int | None]] = {}
    for server, kids in servers.items():
        if not isinstance(kids, dict):
            raise MatrixError(400, "M_BAD_JSON", f"server_keys.{server} must be an object")
        criteria: dict[str, int | None] = {}
        for kid, crit in kids.items():
            if not isinstance(crit, dict):
                raise MatrixError(400, "M_BAD_JSON", f"server_keys.{server}.{kid}: not an object")
            criteria[kid] = _minimum(crit.get("minimum_valid_until_ts"), f"{server}.{kid}")
        query[server] = criteria
    return await _answer(query)


@bp.get("/_matrix/federation/v1/version")
@public
async def federation_version() -> dict[str, object]:
    """server-server-api.md "GET /_matrix/federation/v1/version"."""
    return {"server": {"name": "pocketserver", "version": __version__}}
