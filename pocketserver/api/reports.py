"""Reporting content (client-server-api/modules/report_content.md,
data/api/client-server/report_content.yaml): events, rooms and users. The service
is :mod:`pocketserver.rooms.reports`.
"""

from __future__ import annotations

from quart import Blueprint

from pocketserver.api.http import json_body, optional_str, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.core.identifiers import is_valid_room_id, is_valid_user_id
from pocketserver.errors import bad_json, invalid_param, missing_param, not_found

bp = Blueprint("reports", __name__)

MAX_REASON_CHARS = 2000


def _reason(body: dict[str, object], *, required: bool) -> str | None:
    if required and body.get("reason") is None:
        raise missing_param("reason")
    reason = optional_str(body, "reason")
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        raise invalid_param(f"reason is longer than {MAX_REASON_CHARS} characters")
    return reason


@client_route(bp, "/rooms/<room_id>/report/<path:event_id>", methods=["POST"])
async def report_event(room_id: str, event_id: str) -> dict[str, object]:
    requester = await require_auth()
    body = await json_body(allow_empty=True)
    reason = _reason(body, required=False)
    score = body.get("score")  # removed in v1.18; older clients still send it
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise bad_json("score must be a number")
    if not is_valid_room_id(room_id):
        raise not_found("event not found or you are not joined to the room")
    await services().reports.report_event(requester.user_id, room_id, event_id, reason)
    return {}


@client_route(bp, "/rooms/<room_id>/report", methods=["POST"])
async def report_room(room_id: str) -> dict[str, object]:
    requester = await require_auth()
    body = await json_body()
    reason = _reason(body, required=True)
    assert reason is not None
    if not is_valid_room_id(room_id):
        raise not_found("room not found")
    await services().reports.report_room(requester.user_id, room_id, reason)
    return {}


@client_route(bp, "/users/<user_id>/report", methods=["POST"])
async def report_user(user_id: str) -> dict[str, object]:
    requester = await require_auth()
    body = await json_body()
    reason = _reason(body, required=True)
    assert reason is not None
    if not is_valid_user_id(user_id):
        raise invalid_param(f"not a user ID: {user_id!r}")
    await services().reports.report_user(requester.user_id, user_id, reason)
    return {}
