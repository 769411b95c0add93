"""Federation queries (server-server query.yaml), for a server that signed its request:
``/query/profile`` (a local user's public profile) and ``/query/directory`` (a local
room alias)."""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.api.http import services
from pocketserver.core.identifiers import get_domain, is_valid_room_alias, is_valid_user_id
from pocketserver.errors import forbidden, invalid_param, missing_param

bp = Blueprint("federation_query", __name__)


@bp.get("/_matrix/federation/v1/query/profile")
async def query_profile() -> dict[str, object]:
    """The profile, or only ``field`` when given. As Synapse (``on_profile_query``): 403
    ``M_FORBIDDEN`` when ``allow_profile_lookup_over_federation`` is off, a user of
    another server 400, an unknown user 404 ``M_NOT_FOUND``. The client-side profile
    limits of Synapse (``require_auth_for_profile_requests``,
    ``limit_profile_requests_to_users_who_share_rooms``) do not apply to servers there
    either."""
    if not services().config.allow_profile_lookup_over_federation:
        raise forbidden("Profile lookup over federation is disabled on this homeserver")
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


@bp.get("/_matrix/federation/v1/query/directory")
async def query_directory() -> dict[str, object]:
    """A local room alias (server-server query.yaml ``/query/directory``): the room and
    the servers joined to it, ours first (as Synapse). An alias of another server is 400
    (as Synapse), an unknown one 404 ``M_NOT_FOUND``."""
    alias = request.args.get("room_alias")
    if not alias:
        raise missing_param("room_alias")
    s = services()
    if not is_valid_room_alias(alias) or get_domain(alias) != s.config.server_name:
        raise invalid_param("room alias is not hosted on this homeserver")
    room_id = await s.directory.resolve(alias)
    servers = await s.resident_memberships.joined_servers(room_id)
    ours = s.config.server_name
    return {"room_id": room_id, "servers": [ours, *sorted(servers - {ours})]}
