"""Typing, receipts and presence endpoints.

Spec: client-server-api "Typing Notifications", "Receipts", "Presence"
(data/api/client-server/typing.yaml, receipts.yaml, presence.yaml).
"""

from __future__ import annotations

import trio
from quart import Blueprint

from pocketserver.api.http import json_body, require_auth, require_str, services
from pocketserver.api.routes import client_route
from pocketserver.core.identifiers import is_valid_room_id, is_valid_user_id
from pocketserver.ephemeral.presence import MAX_STATUS_MSG, STATES
from pocketserver.ephemeral.typing_notices import DEFAULT_TIMEOUT_MS
from pocketserver.errors import MatrixError, bad_json, forbidden, invalid_param, missing_param

bp = Blueprint("ephemeral", __name__)


def _room_id(room_id: str) -> str:
    if not is_valid_room_id(room_id):
        raise invalid_param(f"not a room ID: {room_id!r}")
    return room_id


def _user_id(user_id: str) -> str:
    if not is_valid_user_id(user_id):
        raise invalid_param(f"not a user ID: {user_id!r}")
    return user_id


@client_route(bp, "/rooms/<room_id>/typing/<user_id>", methods=["PUT"])
async def set_typing(room_id: str, user_id: str) -> dict[str, object]:
    requester = await require_auth()
    if _user_id(user_id) != requester.user_id:
        raise forbidden("you can only set your own typing state")
    body = await json_body()
    typing = body.get("typing")
    if typing is None:
        raise missing_param("typing")
    if not isinstance(typing, bool):
        raise bad_json("typing must be true or false")
    timeout = body.get("timeout", DEFAULT_TIMEOUT_MS)
    if timeout is None:
        timeout = DEFAULT_TIMEOUT_MS
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise bad_json("timeout must be an integer (milliseconds)")
    if timeout < 0:
        raise invalid_param("timeout must not be negative")
    await services().typing.set_typing(user_id, _room_id(room_id), typing, timeout)
    return {}


@client_route(bp, "/rooms/<room_id>/receipt/<receipt_type>/<path:event_id>", methods=["POST"])
async def send_receipt(room_id: str, receipt_type: str, event_id: str) -> dict[str, object]:
    requester = await require_auth()
    body = await json_body(allow_empty=True)
    thread_id = body.get("thread_id")
    if thread_id is not None and not isinstance(thread_id, str):
        raise invalid_param("thread_id must be a non-empty string")
    await services().receipts.set_receipt(
        requester.user_id, _room_id(room_id), receipt_type, event_id, thread_id
    )
    return {}


@client_route(bp, "/presence/<user_id>/status", methods=["GET"])
async def get_presence(user_id: str) -> dict[str, object]:
    requester = await require_auth()
    presence = services().presence
    _user_id(user_id)
    if not presence.enabled:
        return {"presence": "offline"}
    if not await presence.can_see(requester.user_id, user_id):
        raise forbidden("you are not allowed to see their presence")
    return presence.get(user_id).to_json()


@client_route(bp, "/presence/<user_id>/status", methods=["PUT"])
async def set_presence(user_id: str) -> dict[str, object]:
    requester = await require_auth()
    if _user_id(user_id) != requester.user_id:
        raise forbidden("you can only set your own presence")
    body = await json_body()
    state = require_str(body, "presence")
    if state not in STATES:
        raise invalid_param(f"presence must be one of {', '.join(STATES)}")
    status_msg = body.get("status_msg")
    if status_msg is not None and not isinstance(status_msg, str):
        raise bad_json("status_msg must be a string")
    if status_msg is not None and len(status_msg) > MAX_STATUS_MSG:
        raise MatrixError(400, "M_INVALID_PARAM", f"status_msg is over {MAX_STATUS_MSG} characters")
    # rc_presence.per_user: 429 past it, as Synapse (which then ignores the change).
    services().ratelimits.presence.check(user_id, trio.current_time())
    services().presence.set_state(user_id, state, status_msg)
    return {}
