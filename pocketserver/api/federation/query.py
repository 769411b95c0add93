"""``GET /_matrix/federation/v1/query/profile`` (server-server query.yaml): a local
user's public profile, for a server that signed its request."""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.api.http import services
from pocketserver.core.identifiers import get_domain, is_valid_user_id
from pocketserver.errors import invalid_param, missing_param

bp = Blueprint("federation_query", __name__)


@bp.get("/_matrix/federation/v1/query/profile")
async def query_profile() -> dict[str, object]:
    """The profile, or only ``field`` when given. A user of another server is 400 (as
    Synapse), an unknown user 404 ``M_NOT_FOUND``."""
    user_id = request.args.get("user_id")
    if not user_id:
        raise missing_param("user_id")
    s = services()
    if not is_valid_user_id(user_id) or get_domain(user_id) != s.config.server_name:
        raise invalid_param("user is not hosted on this homeserver")
    profile = await s.profiles.get(user_id)
    field = request.args.get("field")
    if field is not None:
        return {field: profile[field]} if field in profile else {}
    return profile
