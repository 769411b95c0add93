"""Room aliases and directory visibility (client-server API "Room aliases",
"Room directory")."""

from __future__ import annotations

from quart import Blueprint

from pocketserver.api.http import (
    json_body,
    requesting_service,
    require_auth,
    require_str,
    services,
)
from pocketserver.api.routes import client_route
from pocketserver.core.identifiers import is_valid_room_id
from pocketserver.errors import MatrixError, forbidden, not_found

bp = Blueprint("directory", __name__)


@client_route(bp, "/directory/room/<room_alias>", methods=["GET"])
async def get_alias(room_alias: str) -> dict[str, object]:
    s = services()
    if not room_alias.startswith("#"):
        await s.directory.resolve(room_alias)  # 400 M_INVALID_PARAM
    room_id, servers = await s.membership.resolve_with_servers(room_alias)
    return {"room_id": room_id, "servers": servers or [s.config.server_name]}


@client_route(bp, "/directory/room/<room_alias>", methods=["PUT"])
async def put_alias(room_alias: str) -> dict[str, object]:
    requester = await require_auth()
    body = await json_body()
    room_id = require_str(body, "room_id")
    if not is_valid_room_id(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", "not a room ID")
    s = services()
    s.appservices.check_alias_allowed(room_alias, requesting_service(requester))
    await s.directory.create_alias(room_alias, room_id, requester.user_id)
    return {}


@client_route(bp, "/directory/room/<room_alias>", methods=["DELETE"])
async def delete_alias(room_alias: str) -> dict[str, object]:
    requester = await require_auth()
    s = services()
    room_id = await s.directory.delete_alias(
        room_alias, requester.user_id, is_admin=requester.is_admin
    )
    await s.room_client.drop_canonical_alias(requester.user_id, room_id, room_alias)
    return {}


@client_route(bp, "/rooms/<room_id>/aliases", methods=["GET"])
async def room_aliases(room_id: str) -> dict[str, object]:
    requester = await require_auth()
    s = services()
    await s.room_client.visible_state_ids(requester.user_id, room_id)
    return {"aliases": await s.directory.aliases(room_id)}


@client_route(bp, "/directory/list/room/<room_id>", methods=["GET"])
async def get_visibility(room_id: str) -> dict[str, object]:
    s = services()
    if await s.room_store.room_version(room_id) is None:
        raise not_found("unknown room")
    return {"visibility": "public" if await s.directory.is_public(room_id) else "private"}


@client_route(bp, "/directory/list/room/<room_id>", methods=["PUT"])
async def put_visibility(room_id: str) -> dict[str, object]:
    """Local users may publish rooms they administer (Synapse's default
    room_list_publication_rules), server admins any room."""
    requester = await require_auth()
    s = services()
    body = await json_body()
    visibility = body.get("visibility", "public")
    if visibility not in ("public", "private"):
        raise MatrixError(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
    if await s.room_store.room_version(room_id) is None:
        raise not_found("unknown room")
    allowed = requester.is_admin or await s.directory.can_send_state(
        room_id, requester.user_id, "m.room.canonical_alias"
    )
    if not allowed:
        raise forbidden("you may not change this room's directory visibility")
    await s.directory.set_visibility(room_id, public=visibility == "public")
    return {}
