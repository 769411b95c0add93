"""Room history: ``GET /rooms/{roomId}/messages`` and ``/context/{eventId}``.

Spec: client-server-api "Getting events for a room" (data/api/client-server/
message_pagination.yaml, event_context.yaml). Events carry bundled aggregations.
"""

from __future__ import annotations

import json
import time

from quart import Blueprint, request

from pocketserver.api.filters import parse_event_filter
from pocketserver.api.http import require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.core.event_filter import EventFilter
from pocketserver.core.identifiers import is_valid_room_id
from pocketserver.errors import MatrixError
from pocketserver.rooms.client_events import client_event
from pocketserver.rooms.history import History, Position, parse_token
from pocketserver.rooms.reading import ReadEvent
from pocketserver.sync.bundled import serialise_bundled

bp = Blueprint("history", __name__)

DEFAULT_LIMIT = 10


def room_id_arg(room_id: str) -> str:
    if not is_valid_room_id(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"not a room ID: {room_id!r}")
    return room_id


def int_arg(name: str, default: int, *, minimum: int = 0) -> int:
    """A non-negative integer query parameter.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` if it is not one (or below ``minimum``).
    """
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be a non-negative integer")
    value = int(raw)
    if value < minimum:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be at least {minimum}")
    return value


def position_arg(name: str) -> Position | None:
    """A pagination token parameter; absent or empty means none."""
    raw = request.args.get(name)
    return parse_token(raw) if raw else None


def stream_position_arg(name: str) -> int | None:
    """A pagination token parameter as a stream position (stream-ordered readers such
    as ``/relations``); absent or empty means none."""
    raw = request.args.get(name)
    return parse_token(raw).stream if raw else None


def dir_arg(*, required: bool) -> bool:
    """Whether ``dir`` asks to go forwards.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM`` if required and absent, 400
            ``M_INVALID_PARAM`` if it is neither ``b`` nor ``f``.
    """
    raw = request.args.get("dir")
    if raw is None:
        if required:
            raise MatrixError(400, "M_MISSING_PARAM", "dir is required (b or f)")
        return False
    if raw not in ("b", "f"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
    return raw == "f"


def filter_arg() -> EventFilter:
    """The ``filter`` query parameter, a JSON RoomEventFilter.

    Raises:
        MatrixError: 400 ``M_NOT_JSON`` if it isn't JSON, ``M_BAD_JSON`` for a wrong shape.
    """
    raw = request.args.get("filter")
    if raw is None or not raw.strip():
        return EventFilter()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise MatrixError(400, "M_NOT_JSON", "filter is not valid JSON") from None
    return parse_event_filter(body, "filter")


async def ignored_users(user_id: str) -> frozenset[str]:
    """The users ``user_id`` ignores."""
    return await services().account_data.ignored_users(user_id)


def now_ms() -> int:
    return int(time.time() * 1000)


async def serialise(
    user_id: str, events: list[ReadEvent], ignored: frozenset[str]
) -> list[dict[str, object]]:
    s = services()
    return await serialise_bundled(
        s.room_store, s.events, user_id, events, now_ms(), ignored=ignored
    )


@client_route(bp, "/rooms/<room_id>/messages", methods=["GET"])
async def messages(room_id: str) -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    room_id = room_id_arg(room_id)
    forwards = dir_arg(required=True)
    from_pos, to_pos = position_arg("from"), position_arg("to")
    limit = int_arg("limit", DEFAULT_LIMIT)
    flt = filter_arg()
    ignored = await ignored_users(requester.user_id)
    s = services()
    result = await History(s.room_client, s.remote_backfill.fill).messages(
        requester.user_id,
        room_id,
        from_pos=from_pos,
        to_pos=to_pos,
        forwards=forwards,
        limit=limit,
        flt=flt,
        ignored=ignored,
    )
    body: dict[str, object] = {
        "chunk": await serialise(requester.user_id, result.chunk, ignored),
        "start": request.args.get("from") or result.start.encode(),  # from, as given
    }
    if result.end is not None:
        body["end"] = result.end.encode()
    if flt.lazy_load_members:
        now = now_ms()
        body["state"] = [client_event(ev, now) for ev in result.state]
    return body


@client_route(bp, "/rooms/<room_id>/context/<path:event_id>", methods=["GET"])
async def context(room_id: str, event_id: str) -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    room_id = room_id_arg(room_id)
    limit = int_arg("limit", DEFAULT_LIMIT)
    flt = filter_arg()
    ignored = await ignored_users(requester.user_id)
    result = await History(services().room_client).context(
        requester.user_id, room_id, event_id, limit=limit, flt=flt, ignored=ignored
    )
    shown = await serialise(
        requester.user_id, [*result.before, result.event, *result.after], ignored
    )
    n = len(result.before)
    now = now_ms()
    return {
        "events_before": shown[:n],
        "event": shown[n],
        "events_after": shown[n + 1 :],
        "start": result.start.encode(),
        "end": result.end.encode(),
        "state": [client_event(ev, now) for ev in result.state],
    }
