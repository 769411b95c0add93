"""``POST /search`` (data/api/client-server/search.yaml)."""

from __future__ import annotations

from collections.abc import Mapping

from quart import Blueprint, request

from pocketserver.api.filters import parse_event_filter
from pocketserver.api.http import get_bool, json_body, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.errors import MatrixError, bad_json, invalid_param, missing_param
from pocketserver.rooms.search import SEARCH_KEYS, RoomEventsCriteria, RoomSearch

bp = Blueprint("search", __name__)

MAX_SEARCH_TERM_CHARS = 1000


def _object(body: Mapping[str, object], key: str, where: str) -> Mapping[str, object] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise bad_json(f"{where}{key} must be an object")
    return value


def _context_limit(context: Mapping[str, object], key: str) -> int:
    value = context.get(key, 5)
    if value is None:
        return 5
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json(f"event_context.{key} must be an integer")
    if value < 0:
        raise invalid_param(f"event_context.{key} may not be negative")
    return value


def parse_room_events(body: Mapping[str, object]) -> RoomEventsCriteria:
    """The ``room_events`` criteria, validated.

    Raises:
        MatrixError: 400 ``M_MISSING_PARAM`` (no ``search_term``), ``M_BAD_JSON``
            (wrong types), ``M_INVALID_PARAM`` (values outside the spec's enums).
    """
    term = body.get("search_term")
    if term is None:
        raise missing_param("search_term")
    if not isinstance(term, str):
        raise bad_json("search_term must be a string")
    if len(term) > MAX_SEARCH_TERM_CHARS:
        raise invalid_param(f"search_term is longer than {MAX_SEARCH_TERM_CHARS} characters")
    keys = body.get("keys", list(SEARCH_KEYS))
    if keys is None:
        keys = list(SEARCH_KEYS)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise bad_json("keys must be a list of strings")
    unknown = [k for k in keys if k not in SEARCH_KEYS]
    if unknown:
        raise invalid_param(f"keys may only hold {', '.join(SEARCH_KEYS)}, not {unknown[0]!r}")
    order_by = body.get("order_by", "rank")
    if order_by is None:
        order_by = "rank"
    if order_by not in ("rank", "recent"):
        raise invalid_param("order_by must be 'rank' or 'recent'")
    context = _object(body, "event_context", "")
    before_limit = after_limit = 5
    include_profile = False
    if context is not None:
        before_limit = _context_limit(context, "before_limit")
        after_limit = _context_limit(context, "after_limit")
        include_profile = get_bool(dict(context), "include_profile")
    groupings = _object(body, "groupings", "")
    group_by: list[str] = []
    if groupings is not None:
        groups = groupings.get("group_by") or []
        if not isinstance(groups, list):
            raise bad_json("groupings.group_by must be a list")
        for group in groups:
            if not isinstance(group, Mapping):
                raise bad_json("groupings.group_by entries must be objects")
            key = group.get("key")
            if key not in ("room_id", "sender"):
                raise invalid_param("group keys must be 'room_id' or 'sender'")
            if key not in group_by:
                group_by.append(str(key))
    return RoomEventsCriteria(
        search_term=term,
        keys=tuple(dict.fromkeys(keys)) if keys else SEARCH_KEYS,
        filter=parse_event_filter(body.get("filter"), "filter"),
        order_by=str(order_by),
        before_limit=before_limit if context is not None else None,
        after_limit=after_limit,
        include_profile=include_profile,
        include_state=get_bool(dict(body), "include_state"),
        group_by=tuple(group_by),
    )


@client_route(bp, "/search", methods=["POST"])
async def search() -> dict[str, object]:
    requester = await require_auth()
    body = await json_body()
    categories = body.get("search_categories")
    if categories is None:
        raise missing_param("search_categories")
    if not isinstance(categories, Mapping):
        raise bad_json("search_categories must be an object")
    room_events = _object(categories, "room_events", "search_categories.")
    next_batch = request.args.get("next_batch")
    result: dict[str, object] = {}
    if room_events is not None:
        criteria = parse_room_events(room_events)
        searcher = RoomSearch(services().room_client)
        result["room_events"] = await searcher.search(requester.user_id, criteria, next_batch)
    elif next_batch is not None:
        raise MatrixError(400, "M_INVALID_PARAM", "next_batch without a category to continue")
    return {"search_categories": result}
