"""``GET /rooms/{roomId}/hierarchy`` (client-server-api/modules/spaces.md,
data/api/client-server/space_hierarchy.yaml): a depth-first walk over
``m.space.child`` state of local rooms.

Each room appears once (loops are broken by remembering what was visited); a child
this server doesn't know, or that the user may not see, is left out (no federation
yet). Pagination is stateless: the token holds the walk's parameters and how many
rooms were already returned, and each page walks again from the root (the walk is
bounded by ``MAX_ROOMS_WALKED``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

from pocketserver.errors import MatrixError, forbidden
from pocketserver.rooms.client_events import stripped_state
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.summary import RoomInfo, can_see, room_info, room_summary

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
DEFAULT_MAX_DEPTH = 10
MAX_DEPTH = 20
MAX_ROOMS_WALKED = 1000


@dataclass(frozen=True, slots=True)
class HierarchyRequest:
    room_id: str
    suggested_only: bool = False
    limit: int = DEFAULT_LIMIT
    max_depth: int = DEFAULT_MAX_DEPTH
    skip: int = 0


def encode_token(req: HierarchyRequest, skip: int) -> str:
    raw = json.dumps([req.room_id, req.suggested_only, req.max_depth, skip]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def apply_token(req: HierarchyRequest, token: str) -> HierarchyRequest:
    """The request continued from ``token``.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for an unknown token, or one from a walk
            with another root, ``suggested_only`` or ``max_depth``.
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        room_id, suggested, depth, skip = json.loads(raw)
    except (ValueError, binascii.Error, TypeError):
        raise MatrixError(400, "M_INVALID_PARAM", "unknown pagination token") from None
    if not isinstance(skip, int) or skip < 0 or room_id != req.room_id:
        raise MatrixError(400, "M_INVALID_PARAM", "unknown pagination token")
    if suggested != req.suggested_only or depth != req.max_depth:
        raise MatrixError(
            400,
            "M_INVALID_PARAM",
            "suggested_only and max_depth cannot change on paginated requests",
        )
    return HierarchyRequest(req.room_id, req.suggested_only, req.limit, req.max_depth, skip)


def _child_sort_key(child: Mapping[str, object]) -> tuple[int, str, int, str]:
    """spaces.md "Ordering of children within a space"."""
    content = child.get("content")
    order = content.get("order") if isinstance(content, Mapping) else None
    valid = (
        isinstance(order, str) and len(order) <= 50 and all(0x20 <= ord(c) <= 0x7E for c in order)
    )
    ts = child.get("origin_server_ts")
    return (
        0 if valid else 1,
        str(order) if valid else "",
        ts if isinstance(ts, int) else 0,
        str(child.get("state_key")),
    )


class SpaceHierarchy:
    def __init__(self, store: RoomStore, reader: EventReader) -> None:
        self.store = store
        self.reader = reader

    async def _children(self, info: RoomInfo) -> list[dict[str, object]]:
        """The valid ``m.space.child`` events of a room, stripped, in spec order."""
        ids = [eid for (t, _), eid in info.state_ids.items() if t == "m.space.child"]
        events = await self.reader.get_events(ids)
        children = []
        for ev in events.values():
            content = ev.pdu.get("content")
            via = content.get("via") if isinstance(content, Mapping) else None
            if not isinstance(via, list) or not via:
                continue  # no via: not a child any more
            child = stripped_state(ev.pdu)
            child["origin_server_ts"] = ev.pdu.get("origin_server_ts", 0)
            children.append(child)
        children.sort(key=_child_sort_key)
        return children

    async def walk(self, user_id: str, req: HierarchyRequest) -> dict[str, object]:
        """One page of the hierarchy below ``req.room_id``.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if the root is unknown or not visible.
        """
        root = await room_info(self.store, self.reader, req.room_id, user_id)
        if root is None or root.membership(user_id) == "ban":
            raise forbidden("you are not allowed to view this room")
        if not await can_see(self.store, root, user_id):
            raise forbidden("you are not allowed to view this room")
        stack: list[tuple[str, int, RoomInfo | None]] = [(req.room_id, 0, root)]
        visited: set[str] = set()
        rooms: list[dict[str, object]] = []
        seen = 0
        while stack and len(visited) < MAX_ROOMS_WALKED:
            room_id, depth, info = stack.pop()
            if room_id in visited:
                continue
            visited.add(room_id)
            if info is None:
                info = await room_info(self.store, self.reader, room_id, user_id)
                if info is None or not await can_see(self.store, info, user_id):
                    continue
            is_space = info.room_type == "m.space"
            children = await self._children(info) if is_space else []
            if seen >= req.skip:
                if len(rooms) >= req.limit:
                    return {"rooms": rooms, "next_batch": encode_token(req, seen)}
                rooms.append({**room_summary(info), "children_state": children})
            seen += 1
            if depth >= req.max_depth:
                continue
            for child in reversed(children):
                content = child.get("content")
                suggested = isinstance(content, Mapping) and content.get("suggested") is True
                if req.suggested_only and not suggested:
                    continue
                child_id = str(child.get("state_key"))
                if child_id not in visited:
                    stack.append((child_id, depth + 1, None))
        return {"rooms": rooms}
