"""Synapse's admin API for registration tokens: ``/_synapse/admin/v1/registration_tokens``.

List (``?valid=true|false``), create (``/new``), read, update and delete tokens;
only server admins may call it (403 ``M_FORBIDDEN`` otherwise).
"""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.api.http import json_body, require_auth, services
from pocketserver.errors import MatrixError, forbidden

bp = Blueprint("admin_tokens", __name__)

PREFIX = "/_synapse/admin/v1/registration_tokens"


async def _require_admin() -> None:
    requester = await require_auth()
    if not requester.is_admin:
        raise forbidden("You are not a server admin")


@bp.get(PREFIX)
async def list_tokens() -> dict[str, object]:
    await _require_admin()
    raw = request.args.get("valid")
    if raw not in (None, "true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "valid must be 'true' or 'false'")
    valid = None if raw is None else raw == "true"
    tokens = await services().account_api.registration_tokens.list(valid)
    return {"registration_tokens": tokens}


@bp.post(PREFIX + "/new")
async def new_token() -> dict[str, object]:
    await _require_admin()
    body = await json_body(allow_empty=True)
    return await services().account_api.registration_tokens.create(body)


@bp.get(PREFIX + "/<token>")
async def get_token(token: str) -> dict[str, object]:
    await _require_admin()
    return await services().account_api.registration_tokens.get(token)


@bp.put(PREFIX + "/<token>")
async def update_token(token: str) -> dict[str, object]:
    await _require_admin()
    body = await json_body(allow_empty=True)
    return await services().account_api.registration_tokens.update(token, body)


@bp.delete(PREFIX + "/<token>")
async def delete_token(token: str) -> dict[str, object]:
    await _require_admin()
    await services().account_api.registration_tokens.delete(token)
    return {}
