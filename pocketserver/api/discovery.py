"""Finding rooms and places in them: space hierarchy, room summary, mutual rooms and
timestamp_to_event (data/api/client-server/space_hierarchy.yaml, room_summary.yaml,
mutual_rooms.yaml, room_event_by_timestamp.yaml)."""

from __future__ import annotations

import base64
import binascii

from quart import Blueprint, request

from pocketserver.api.http import access_token, require_auth, services
from pocketserver.api.routes import client_v1_route
from pocketserver.core.identifiers import is_valid_room_id, is_valid_user_id
from pocketserver.errors import invalid_param, missing_param, not_found
from pocketserver.rooms.hierarchy import (
    DEFAULT_LIMIT,
    DEFAULT_MAX_DEPTH,
    MAX_DEPTH,
    MAX_LIMIT,
    HierarchyRequest,
    apply_token,
)
from pocketserver.rooms.summary import can_see, room_info, room_summary

bp = Blueprint("discovery", __name__)

MUTUAL_ROOMS_BATCH = 100
TS_CANDIDATES = 50


def _int_arg(name: str, default: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid_param(f"{name} must be an integer") from None


def _bool_arg(name: str) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise invalid_param(f"{name} must be 'true' or 'false'")


# --- spaces ------------------------------------------------------------------------------


@client_v1_route(bp, "/rooms/<room_id>/hierarchy", methods=["GET"])
async def hierarchy(room_id: str) -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    limit = _int_arg("limit", DEFAULT_LIMIT)
    max_depth = _int_arg("max_depth", DEFAULT_MAX_DEPTH)
    assert limit is not None
    assert max_depth is not None
    if limit <= 0:
        raise invalid_param("limit must be greater than zero")
    if max_depth < 0:
        raise invalid_param("max_depth may not be negative")
    if not is_valid_room_id(room_id):
        raise invalid_param(f"not a room ID: {room_id!r}")
    req = HierarchyRequest(
        room_id=room_id,
        suggested_only=_bool_arg("suggested_only"),
        limit=min(limit, MAX_LIMIT),
        max_depth=min(max_depth, MAX_DEPTH),
    )
    token = request.args.get("from")
    if token is not None:
        req = apply_token(req, token)
    return await services().space_hierarchy.walk(requester.user_id, req)


# --- room summary ------------------------------------------------------------------------


async def _summary(room_id_or_alias: str) -> dict[str, object]:
    s = services()
    authed = access_token() is not None
    user_id = (await require_auth(allow_guest=True)).user_id if authed else None
    if room_id_or_alias.startswith("#"):
        room_id = await s.directory.resolve(room_id_or_alias)
    elif is_valid_room_id(room_id_or_alias):
        room_id = room_id_or_alias
    else:
        raise invalid_param(f"not a room ID or alias: {room_id_or_alias!r}")
    info = await room_info(s.room_store, s.events, room_id, user_id)
    if info is None:
        # A room we do not hold: asked of the servers named by ``via`` (as Synapse;
        # ``server_name`` is the older name of the parameter).
        via = request.args.getlist("via") or request.args.getlist("server_name")
        remote = await s.space_hierarchy.remote_summary(user_id, room_id, via)
        if remote is None:
            raise not_found("room not found or not visible to you")
        if user_id is not None:
            remote["membership"] = "leave"
        return remote
    if not await can_see(s.room_store, info, user_id):
        raise not_found("room not found or not visible to you")
    summary = room_summary(info)
    if user_id is not None:
        summary["membership"] = info.membership(user_id) or "leave"
    return summary


@client_v1_route(bp, "/room_summary/<path:room_id_or_alias>", methods=["GET"])
async def get_room_summary(room_id_or_alias: str) -> dict[str, object]:
    return await _summary(room_id_or_alias)


@bp.get("/_matrix/client/unstable/im.nheko.summary/rooms/<path:room_id_or_alias>/summary")
async def get_room_summary_nheko(room_id_or_alias: str) -> dict[str, object]:
    """MSC3266's unstable path, which nheko and older Element builds call."""
    return await _summary(room_id_or_alias)


@bp.get("/_matrix/client/unstable/im.nheko.summary/summary/<path:room_id_or_alias>")
async def get_room_summary_unstable(room_id_or_alias: str) -> dict[str, object]:
    return await _summary(room_id_or_alias)


# --- timestamp_to_event ------------------------------------------------------------------


@client_v1_route(bp, "/rooms/<room_id>/timestamp_to_event", methods=["GET"])
async def timestamp_to_event(room_id: str) -> dict[str, object]:
    requester = await require_auth()
    if request.args.get("ts") is None:
        raise missing_param("ts")
    ts = _int_arg("ts", None)
    direction = request.args.get("dir")
    if direction is None:
        raise missing_param("dir")
    if direction not in ("f", "b"):
        raise invalid_param("dir must be 'f' or 'b'")
    if not is_valid_room_id(room_id):
        raise invalid_param(f"not a room ID: {room_id!r}")
    assert ts is not None
    found = await services().room_client.event_near_ts(
        requester.user_id, room_id, ts, direction == "f", TS_CANDIDATES
    )
    if found is None:
        where = "forwards" if direction == "f" else "backwards"
        raise not_found(f"no event found from {ts} {where}")
    return {"event_id": found.event_id, "origin_server_ts": found.pdu.get("origin_server_ts")}


# --- mutual rooms ------------------------------------------------------------------------


def _decode_from(token: str) -> str:
    try:
        value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_param("invalid from token") from None
    if not value.startswith("!"):
        raise invalid_param("invalid from token")
    return value


async def _mutual_rooms() -> dict[str, object]:
    requester = await require_auth()
    other = request.args.get("user_id")
    if other is None:
        raise missing_param("user_id")
    if not is_valid_user_id(other):
        raise invalid_param(f"not a user ID: {other!r}")
    if other == requester.user_id:
        raise invalid_param("user_id may not be your own user ID")
    token = request.args.get("from")
    after = _decode_from(token) if token is not None else None
    rooms, count = await services().room_client.mutual_rooms(
        requester.user_id, other, after, MUTUAL_ROOMS_BATCH + 1
    )
    body: dict[str, object] = {"joined": rooms[:MUTUAL_ROOMS_BATCH], "count": count}
    if len(rooms) > MUTUAL_ROOMS_BATCH:
        last = rooms[MUTUAL_ROOMS_BATCH - 1]
        body["next_batch"] = base64.urlsafe_b64encode(last.encode()).decode().rstrip("=")
    return body


@client_v1_route(bp, "/mutual_rooms", methods=["GET"])
async def mutual_rooms() -> dict[str, object]:
    return await _mutual_rooms()


@bp.get("/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms")
async def mutual_rooms_unstable() -> dict[str, object]:
    """MSC2666's unstable path (Element's user info panel)."""
    return await _mutual_rooms()
