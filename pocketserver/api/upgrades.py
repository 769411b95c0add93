"""``POST /rooms/{roomId}/upgrade`` (data/api/client-server/room_upgrades.yaml)."""

from __future__ import annotations

from quart import Blueprint

from pocketserver.api.http import json_body, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.core.identifiers import is_valid_room_id, is_valid_user_id
from pocketserver.errors import bad_json, invalid_param, missing_param

bp = Blueprint("upgrades", __name__)

MAX_ADDITIONAL_CREATORS = 50


@client_route(bp, "/rooms/<room_id>/upgrade", methods=["POST"])
async def upgrade(room_id: str) -> dict[str, object]:
    requester = await require_auth()
    body = await json_body()
    new_version = body.get("new_version")
    if new_version is None:
        raise missing_param("new_version")
    if not isinstance(new_version, str):
        raise bad_json("new_version must be a string")
    extra = body.get("additional_creators") or []
    if not isinstance(extra, list) or not all(isinstance(u, str) for u in extra):
        raise bad_json("additional_creators must be a list of user IDs")
    if len(extra) > MAX_ADDITIONAL_CREATORS:
        raise invalid_param(f"at most {MAX_ADDITIONAL_CREATORS} additional_creators")
    for user in extra:
        if not is_valid_user_id(user):
            raise invalid_param(f"not a user ID: {user!r}")
    if not is_valid_room_id(room_id):
        raise invalid_param(f"not a room ID: {room_id!r}")
    s = services()
    s.ratelimits.rooms.check_room_creation(requester.user_id)
    new_room = await s.room_upgrades.upgrade(
        requester.user_id,
        room_id,
        new_version,
        additional_creators=extra,
        member_content=await s.profiles.member_content(requester.user_id),
    )
    return {"replacement_room": new_room}
