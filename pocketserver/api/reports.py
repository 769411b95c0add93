"""Reporting content (client-server-api/modules/report_content.md,
data/api/client-server/report_content.yaml): events, rooms and users.

Reports are stored for the server's admins (tables ``event_reports``,
``room_reports``, ``user_reports``); each costs one token of the user's message
rate limit, so a user cannot fill the disk with them.
"""

from __future__ import annotations

import time

import trio
from quart import Blueprint

from pocketserver.api.http import json_body, optional_str, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.core.identifiers import is_valid_room_id, is_valid_user_id
from pocketserver.errors import bad_json, invalid_param, missing_param, not_found
from pocketserver.storage import reports as report_store
from pocketserver.storage import users as user_store

bp = Blueprint("reports", __name__)

MAX_REASON_CHARS = 2000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _reason(body: dict[str, object], *, required: bool) -> str | None:
    if required and body.get("reason") is None:
        raise missing_param("reason")
    reason = optional_str(body, "reason")
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        raise invalid_param(f"reason is longer than {MAX_REASON_CHARS} characters")
    return reason


@client_route(bp, "/rooms/<room_id>/report/<path:event_id>", methods=["POST"])
async def report_event(room_id: str, event_id: str) -> dict[str, object]:
    """The reporter must be joined; an unknown, invisible or redacted event is 404."""
    requester = await require_auth()
    body = await json_body(allow_empty=True)
    reason = _reason(body, required=False)
    score = body.get("score")  # removed in v1.18; older clients still send it
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise bad_json("score must be a number")
    s = services()
    if not is_valid_room_id(room_id):
        raise not_found("event not found or you are not joined to the room")
    membership, _ = await s.room_client.membership_of(room_id, requester.user_id)
    if membership != "join":
        raise not_found("event not found or you are not joined to the room")
    events = await s.room_client.visible_events(requester.user_id, room_id, [event_id])
    found = events.get(event_id)
    if found is None or found.redacted_because is not None:
        raise not_found("event not found or you are not joined to the room")
    s.ratelimits.message.check(requester.user_id, trio.current_time())
    await s.db.write(
        report_store.add_event_report, room_id, event_id, requester.user_id, reason, _now_ms()
    )
    return {}


@client_route(bp, "/rooms/<room_id>/report", methods=["POST"])
async def report_room(room_id: str) -> dict[str, object]:
    """Anyone may report a room they know of, joined or not (v1.13)."""
    requester = await require_auth()
    body = await json_body()
    reason = _reason(body, required=True)
    assert reason is not None
    s = services()
    if not is_valid_room_id(room_id) or await s.room_store.room_version(room_id) is None:
        raise not_found("room not found")
    s.ratelimits.message.check(requester.user_id, trio.current_time())
    await s.db.write(report_store.add_room_report, room_id, requester.user_id, reason, _now_ms())
    return {}


@client_route(bp, "/users/<user_id>/report", methods=["POST"])
async def report_user(user_id: str) -> dict[str, object]:
    """Local users must exist; users of other servers can't be checked here and are
    accepted (v1.14)."""
    requester = await require_auth()
    body = await json_body()
    reason = _reason(body, required=True)
    assert reason is not None
    s = services()
    if not is_valid_user_id(user_id):
        raise invalid_param(f"not a user ID: {user_id!r}")
    local = user_id.split(":", 1)[1] == s.config.server_name
    if local and await s.db.read(user_store.get_user, user_id) is None:
        raise not_found("user not found")
    s.ratelimits.message.check(requester.user_id, trio.current_time())
    await s.db.write(report_store.add_user_report, user_id, requester.user_id, reason, _now_ms())
    return {}
