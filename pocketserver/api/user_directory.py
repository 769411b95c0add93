"""``POST /user_directory/search`` (client-server API "User directory")."""

from __future__ import annotations

from quart import Blueprint

from pocketserver.api.http import json_body, require_auth, require_str, services
from pocketserver.api.routes import client_route
from pocketserver.errors import MatrixError

bp = Blueprint("user_directory", __name__)

DEFAULT_LIMIT = 10
MAX_LIMIT = 50
MAX_TERM = 256


@client_route(bp, "/user_directory/search", methods=["POST"])
async def search() -> dict[str, object]:
    requester = await require_auth()
    body = await json_body()
    term = require_str(body, "search_term").strip()
    if len(term) > MAX_TERM:
        raise MatrixError(400, "M_INVALID_PARAM", "search_term is too long")
    limit = body.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise MatrixError(400, "M_BAD_JSON", "limit must be an integer")
    if limit < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
    limit = min(limit, MAX_LIMIT)
    if not term or limit == 0:
        return {"results": [], "limited": False}
    rows = await services().profiles.search_directory(requester.user_id, term, limit)
    results = []
    for user_id, displayname, avatar_url in rows[:limit]:
        entry: dict[str, object] = {"user_id": user_id}
        if isinstance(displayname, str):
            entry["display_name"] = displayname
        if isinstance(avatar_url, str):
            entry["avatar_url"] = avatar_url
        results.append(entry)
    return {"results": results, "limited": len(rows) > limit}
