"""Profiles (client-server API "Profiles")."""

from __future__ import annotations

from quart import Blueprint

from pocketserver.api.http import json_body, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.errors import MatrixError, forbidden, not_found

bp = Blueprint("profile", __name__)

FIELDS = ("displayname", "avatar_url")


async def _lookup(user_id: str) -> dict[str, object]:
    """Local profiles are public (as Synapse by default). Another server's user's needs
    a logged-in requester, so anonymous requests cannot make this server contact other
    servers (Synapse allows them, rate-limited per address)."""
    profiles = services().profiles
    if not profiles.locality.is_mine(user_id):
        await require_auth(allow_guest=True)
    return await profiles.lookup(user_id)


@client_route(bp, "/profile/<user_id>", methods=["GET"])
async def get_profile(user_id: str) -> dict[str, object]:
    return await _lookup(user_id)


@client_route(bp, "/profile/<user_id>/<field>", methods=["GET"])
async def get_field(user_id: str, field: str) -> dict[str, object]:
    """An unset field is 404 (the spec's answer), for another server's user too, where
    Synapse answers 200 ``{}``."""
    if field not in FIELDS:
        raise not_found(f"unknown profile field {field!r}")
    profile = await _lookup(user_id)
    if profile.get(field) is None:
        raise not_found(f"{field} is not set")
    return {field: profile[field]}


@client_route(bp, "/profile/<user_id>/<field>", methods=["PUT"])
async def set_field(user_id: str, field: str) -> dict[str, object]:
    requester = await require_auth(allow_guest=field == "displayname")  # spec, as Synapse
    if field not in FIELDS:
        raise MatrixError(400, "M_UNRECOGNIZED", f"unknown profile field {field!r}")
    if requester.user_id != user_id:
        raise forbidden("you can only change your own profile")
    body = await json_body()
    if field not in body:
        raise MatrixError(400, "M_MISSING_PARAM", f"missing parameter: {field}")
    value = body[field]
    if value is not None and not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", f"{field} must be a string or null")
    await services().profiles.set_field(user_id, field, value)
    return {}
