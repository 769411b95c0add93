"""Third-party identifiers (client-server API "Adding Account Administrative Contact
Information"): this server keeps none and sends no email or SMS.

- ``GET /account/3pid`` lists nothing.
- ``/account/3pid/email|msisdn/requestToken``: 400 ``M_THREEPID_MEDIUM_NOT_SUPPORTED``
  ("The homeserver does not support adding email addresses").
- ``/register/.../requestToken`` and ``/account/password/.../requestToken``: 403
  ``M_THREEPID_DENIED`` ("The homeserver does not permit the address to be bound").
- ``/account/3pid``, ``/account/3pid/add``: 403 ``M_THREEPID_AUTH_FAILED``: no
  validation session (``sid``) can exist here.
- ``/account/3pid/bind``: 400 ``M_SERVER_NOT_TRUSTED``: no identity server is trusted.
- ``/account/3pid/delete``, ``/account/3pid/unbind``: nothing to remove; 200 with
  ``id_server_unbind_result: "no-support"``.

Bodies are checked first, so a malformed request gets its own error.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from quart import Blueprint

from pocketserver.api.http import json_body, require_auth, require_str
from pocketserver.api.routes import client_route
from pocketserver.errors import MatrixError, bad_json, missing_param

bp = Blueprint("threepid", __name__)

MEDIA = ("email", "msisdn")


def _check_send_attempt(body: dict[str, object]) -> None:
    value = body.get("send_attempt")
    if value is None:
        raise missing_param("send_attempt")
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json("send_attempt must be an integer")


async def _request_token_body(medium: str) -> None:
    body = await json_body()
    require_str(body, "client_secret")
    if medium == "email":
        require_str(body, "email")
    else:
        require_str(body, "country")
        require_str(body, "phone_number")
    _check_send_attempt(body)


def _denied() -> MatrixError:
    return MatrixError(403, "M_THREEPID_DENIED", "Third-party identifier is not allowed")


def _request_token_route(path: str, medium: str, error: Callable[[], MatrixError]) -> None:
    """Register ``path``: check the request body, then answer ``error``."""

    async def request_token() -> dict[str, object]:
        await _request_token_body(medium)
        raise error()

    request_token.__name__ = "request_token" + path.replace("/", "_")
    client_route(bp, path, methods=["POST"])(request_token)


for _medium in MEDIA:
    _request_token_route(f"/register/{_medium}/requestToken", _medium, _denied)
    _request_token_route(f"/account/password/{_medium}/requestToken", _medium, _denied)
    _request_token_route(
        f"/account/3pid/{_medium}/requestToken",
        _medium,
        partial(
            MatrixError,
            400,
            "M_THREEPID_MEDIUM_NOT_SUPPORTED",
            f"this server does not support adding {_medium} identifiers",
        ),
    )


@client_route(bp, "/account/3pid", methods=["GET"])
async def list_threepids() -> dict[str, object]:
    await require_auth()
    return {"threepids": []}


async def _medium_and_address() -> None:
    body = await json_body()
    medium = require_str(body, "medium")
    require_str(body, "address")
    if medium not in MEDIA:
        raise MatrixError(400, "M_INVALID_PARAM", "medium must be 'email' or 'msisdn'")
    id_server = body.get("id_server")
    if id_server is not None and not isinstance(id_server, str):
        raise bad_json("id_server must be a string")


@client_route(bp, "/account/3pid", methods=["POST"])
async def add_threepid_legacy() -> dict[str, object]:
    await require_auth()
    body = await json_body()
    creds = body.get("three_pid_creds")
    if creds is None:
        raise missing_param("three_pid_creds")
    if not isinstance(creds, dict):
        raise bad_json("three_pid_creds must be an object")
    require_str(creds, "client_secret")
    require_str(creds, "sid")
    raise MatrixError(403, "M_THREEPID_AUTH_FAILED", "no such validation session")


@client_route(bp, "/account/3pid/add", methods=["POST"])
async def add_threepid() -> dict[str, object]:
    await require_auth()
    body = await json_body()
    require_str(body, "client_secret")
    require_str(body, "sid")
    raise MatrixError(403, "M_THREEPID_AUTH_FAILED", "no such validation session")


@client_route(bp, "/account/3pid/bind", methods=["POST"])
async def bind_threepid() -> dict[str, object]:
    await require_auth()
    body = await json_body()
    for key in ("client_secret", "id_server", "id_access_token", "sid"):
        require_str(body, key)
    raise MatrixError(400, "M_SERVER_NOT_TRUSTED", "this server does not use identity servers")


@client_route(bp, "/account/3pid/delete", methods=["POST"])
async def delete_threepid() -> dict[str, object]:
    await require_auth()
    await _medium_and_address()
    return {"id_server_unbind_result": "no-support"}


@client_route(bp, "/account/3pid/unbind", methods=["POST"])
async def unbind_threepid() -> dict[str, object]:
    await require_auth()
    await _medium_and_address()
    return {"id_server_unbind_result": "no-support"}
