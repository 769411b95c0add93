"""Relations and threads: ``GET /_matrix/client/v1/rooms/{roomId}/relations/...`` and
``GET /_matrix/client/v1/rooms/{roomId}/threads``.

Spec: client-server-api "Relationships API" (data/api/client-server/relations.yaml),
modules/threading.md (threads_list.yaml). Events carry bundled aggregations.
"""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.api.history import (
    dir_arg,
    ignored_users,
    int_arg,
    room_id_arg,
    serialise,
    stream_position_arg,
)
from pocketserver.api.http import require_auth, services
from pocketserver.errors import MatrixError
from pocketserver.rooms.history import encode_position
from pocketserver.rooms.relations import RelationReader

bp = Blueprint("relations", __name__)

V1 = "/_matrix/client/v1"
DEFAULT_LIMIT = 5


def _recurse() -> bool | None:
    raw = request.args.get("recurse")
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "recurse must be true or false")
    return raw == "true"


@bp.route(f"{V1}/rooms/<room_id>/relations/<event_id>", methods=["GET"])
@bp.route(f"{V1}/rooms/<room_id>/relations/<event_id>/<rel_type>", methods=["GET"])
@bp.route(f"{V1}/rooms/<room_id>/relations/<event_id>/<rel_type>/<event_type>", methods=["GET"])
async def relations(
    room_id: str, event_id: str, rel_type: str | None = None, event_type: str | None = None
) -> dict[str, object]:
    requester = await require_auth(allow_guest=True)
    room_id = room_id_arg(room_id)
    forwards = dir_arg(required=False)
    from_raw = request.args.get("from")
    from_pos, to_pos = stream_position_arg("from"), stream_position_arg("to")
    limit = int_arg("limit", DEFAULT_LIMIT)
    recurse = _recurse()
    ignored = await ignored_users(requester.user_id)
    page = await RelationReader(services().room_client).children(
        requester.user_id,
        room_id,
        event_id,
        rel_type=rel_type,
        event_type=event_type,
        from_pos=from_pos,
        to_pos=to_pos,
        forwards=forwards,
        limit=limit,
        recurse=bool(recurse),
        ignored=ignored,
    )
    body: dict[str, object] = {"chunk": await serialise(requester.user_id, page.chunk, ignored)}
    if page.next_position is not None:
        body["next_batch"] = encode_position(page.next_position)
    if from_raw:
        body["prev_batch"] = from_raw
    if recurse is not None:
        body["recursion_depth"] = page.recursion_depth
    return body


@bp.route(f"{V1}/rooms/<room_id>/threads", methods=["GET"])
async def threads(room_id: str) -> dict[str, object]:
    requester = await require_auth()
    room_id = room_id_arg(room_id)
    include = request.args.get("include", "all")
    if include not in ("all", "participated"):
        raise MatrixError(400, "M_INVALID_PARAM", "include must be 'all' or 'participated'")
    from_pos = stream_position_arg("from")
    limit = int_arg("limit", DEFAULT_LIMIT, minimum=1)
    ignored = await ignored_users(requester.user_id)
    page = await RelationReader(services().room_client).threads(
        requester.user_id,
        room_id,
        from_pos=from_pos,
        limit=limit,
        participated=include == "participated",
        ignored=ignored,
    )
    body: dict[str, object] = {"chunk": await serialise(requester.user_id, page.roots, ignored)}
    if page.next_position is not None:
        body["next_batch"] = encode_position(page.next_position)
    return body
