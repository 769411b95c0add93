"""The deprecated sync endpoints: ``GET /events``, ``/initialSync``,
``/rooms/{roomId}/initialSync`` and ``/events/{eventId}`` (client-server API,
data/api/client-server/old_sync.yaml, room_initial_sync.yaml, peeking_events.yaml).

Deprecated since r0 but still in the spec, used for room previews (peeking) and by
tools and test suites (SyTest). The behaviour is in ``sync/legacy.py``. Like /sync,
``/events`` and ``/initialSync`` count as the user being online (as in Synapse).
"""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.api.http import require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.core.identifiers import is_valid_room_id
from pocketserver.errors import MatrixError
from pocketserver.sync.legacy import DEFAULT_EVENTS_LIMIT, DEFAULT_MESSAGES_LIMIT, LegacySync

bp = Blueprint("legacy_sync", __name__)


def _int_arg(args: dict[str, str], name: str, default: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be a non-negative integer")
    return int(raw)


def _bool_arg(args: dict[str, str], name: str) -> bool:
    raw = args.get(name, "false")
    if raw not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be true or false")
    return raw == "true"


def _room_id(raw: str) -> str:
    if not is_valid_room_id(raw):
        raise MatrixError(400, "M_INVALID_PARAM", f"not a room ID: {raw!r}")
    return raw


def _legacy() -> LegacySync:
    return services().legacy_sync


@client_route(bp, "/events", methods=["GET"])
async def events() -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    args = request.args.to_dict()
    timeout_ms = _int_arg(args, "timeout", 0)
    limit = _int_arg(args, "limit", DEFAULT_EVENTS_LIMIT)
    room_id = _room_id(args["room_id"]) if args.get("room_id") else None
    legacy = _legacy()
    since = legacy.parse_token(args["from"]) if args.get("from") else None
    async with services().presence.syncing(requester.user_id, "online"):
        return await legacy.events(
            requester.user_id,
            requester.device_id,
            since=since,
            timeout_ms=timeout_ms,
            limit=limit,
            room_id=room_id,
            is_guest=requester.is_guest,
        )


@client_route(bp, "/initialSync", methods=["GET"])
async def initial_sync() -> dict[str, object]:
    requester = await require_auth()
    args = request.args.to_dict()
    limit = _int_arg(args, "limit", DEFAULT_MESSAGES_LIMIT)
    archived = _bool_arg(args, "archived")
    async with services().presence.syncing(requester.user_id, "online"):
        return await _legacy().initial_sync(
            requester.user_id, requester.device_id, limit=limit, archived=archived
        )


@client_route(bp, "/rooms/<room_id>/initialSync", methods=["GET"])
async def room_initial_sync(room_id: str) -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    limit = _int_arg(request.args.to_dict(), "limit", DEFAULT_MESSAGES_LIMIT)
    return await _legacy().room_initial_sync(
        requester.user_id, requester.device_id, _room_id(room_id), limit
    )


@client_route(bp, "/events/<path:event_id>", methods=["GET"])
async def event(event_id: str) -> dict[str, object]:
    requester = await require_auth()
    return await _legacy().event(requester.user_id, event_id)
