"""``GET /sync`` and filters (client-server API "Syncing", "Filtering")."""

from __future__ import annotations

import json

import trio
from quart import Blueprint, request

from pocketserver.api.filters import parse_sync_filter
from pocketserver.api.http import json_body, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.core.event_filter import SyncFilter
from pocketserver.errors import MatrixError, forbidden, not_found
from pocketserver.streams.token import SyncToken
from pocketserver.sync.handler import SyncRequest

bp = Blueprint("sync", __name__)


def _int_arg(args: dict[str, str], name: str, default: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer") from None
    if value < 0:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must not be negative")
    return value


async def _load_filter(user_id: str, raw: str | None) -> SyncFilter:
    if raw is None:
        return SyncFilter()
    if raw.lstrip().startswith("{"):
        try:
            body = json.loads(raw)
        except ValueError:
            raise MatrixError(400, "M_NOT_JSON", "filter is not valid JSON") from None
        return parse_sync_filter(body)
    if not raw.isdigit() or len(raw) > 18:
        raise MatrixError(400, "M_INVALID_PARAM", "filter must be a filter ID or JSON")
    return await services().filters.get(user_id, int(raw))


@client_route(bp, "/sync", methods=["GET"])
async def sync() -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    # A plain dict (first value of each name, as MultiDict.get): Werkzeug's get raises
    # and catches an HTTP exception inside for every parameter that is absent.
    args = request.args.to_dict()
    since_raw = args.get("since")
    set_presence = args.get("set_presence", "online")
    if set_presence not in ("online", "offline", "unavailable"):
        raise MatrixError(
            400, "M_INVALID_PARAM", "set_presence must be online, offline or unavailable"
        )
    full_state = args.get("full_state", "false")
    if full_state not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "full_state must be true or false")
    use_state_after = args.get("use_state_after", "false")
    if use_state_after not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "use_state_after must be true or false")
    sync_request = SyncRequest(
        user_id=requester.user_id,
        device_id=requester.device_id,
        since=SyncToken.parse(since_raw) if since_raw else None,
        timeout_ms=_int_arg(args, "timeout", 0),
        full_state=full_state == "true",
        filter=await _load_filter(requester.user_id, args.get("filter")),
        use_state_after=use_state_after == "true",
    )
    if set_presence != "offline":
        limiter, now = services().ratelimits.presence_sync, trio.current_time()
        if limiter.would_allow(requester.user_id, now):
            limiter.record(requester.user_id, now)
        else:  # rc_presence: this sync leaves presence alone, as Synapse's affect_presence
            set_presence = "offline"
    async with services().presence.syncing(requester.user_id, set_presence):
        return await services().sync.sync(sync_request)


def _own_user(user_id: str, requester_id: str) -> None:
    if user_id != requester_id:
        raise forbidden("you can only manage your own filters")


@client_route(bp, "/user/<user_id>/filter", methods=["POST"])
async def create_filter(user_id: str) -> dict[str, object]:
    requester = await require_auth()
    _own_user(user_id, requester.user_id)
    body = await json_body()
    parse_sync_filter(body)  # validate before storing
    return {"filter_id": str(await services().filters.add(user_id, body))}


@client_route(bp, "/user/<user_id>/filter/<filter_id>", methods=["GET"])
async def get_filter(user_id: str, filter_id: str) -> dict[str, object]:
    requester = await require_auth()
    _own_user(user_id, requester.user_id)
    if not filter_id.isdigit() or len(filter_id) > 18:
        raise not_found("no such filter")
    return await services().filters.get_json(user_id, int(filter_id))
