"""``GET /rooms/{roomId}/hierarchy`` (client-server-api/modules/spaces.md,
data/api/client-server/space_hierarchy.yaml): a depth-first walk over
``m.space.child`` state of local rooms.

Each room appears once (loops are broken by remembering what was visited); a child
the user may not see is left out. A child this server does not hold is asked of the
servers its ``m.space.child`` event names in ``via`` (``GET /_matrix/federation/v1/
hierarchy/{roomId}``, through :class:`RemoteSpaces`, as Synapse's
``_summarize_remote_room_hierarchy``): the answer summarises that room and its own
children, so only remote *spaces* cost a request; at most ``MAX_REMOTE_FETCHES`` per
page and for ``REMOTE_TIME_BUDGET_S`` at most. Pagination is stateless: the token
holds the walk's parameters and how many rooms were already returned, and each page
walks again from the root (the walk is bounded by ``MAX_ROOMS_WALKED``; remote answers
are cached by the fetcher).

:meth:`SpaceHierarchy.for_server` is the federation side: one level, for a server.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from pocketserver.errors import MatrixError, forbidden, not_found
from pocketserver.rooms.client_events import stripped_state
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.summary import (
    RoomInfo,
    can_see,
    can_server_see,
    room_info,
    room_summary,
)
from pocketserver.storage import dag

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
DEFAULT_MAX_DEPTH = 10
MAX_DEPTH = 20
MAX_ROOMS_WALKED = 1000
MAX_REMOTE_FETCHES = 20
"""Remote spaces asked about while building one page."""
REMOTE_TIME_BUDGET_S = 20.0
"""Once a page has waited this long on other servers, it asks no more of them."""
MAX_CHILDREN_FOR_SERVER = 50
"""Children summarised for another server (Synapse's ``MAX_ROOMS_PER_SPACE``)."""


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


@dataclass(frozen=True, slots=True)
class RemoteSpace:
    """Another server's answer about a room (federation space_hierarchy.yaml)."""

    room: dict[str, object]
    """Its summary, without ``children_state``."""
    children_state: list[dict[str, object]] = field(default_factory=list)
    children: dict[str, dict[str, object]] = field(default_factory=dict)
    """Summaries of its children that server gave, by room ID."""
    inaccessible: frozenset[str] = frozenset()


class RemoteSpaces(Protocol):
    async def fetch(
        self, room_id: str, via: Sequence[str], suggested_only: bool
    ) -> RemoteSpace | None:
        """What one of the ``via`` servers says about ``room_id``, or None."""
        ...


def _valid_child(child: object) -> bool:
    """A child event the walk can follow: ``m.space.child`` with a room ID and a
    non-empty ``via``."""
    if not isinstance(child, Mapping) or child.get("type") != "m.space.child":
        return False
    content = child.get("content")
    via = content.get("via") if isinstance(content, Mapping) else None
    return isinstance(child.get("state_key"), str) and isinstance(via, list) and bool(via)


def _via(child: Mapping[str, object]) -> tuple[str, ...]:
    content = child.get("content")
    via = content.get("via") if isinstance(content, Mapping) else None
    return tuple(v for v in via if isinstance(v, str)) if isinstance(via, list) else ()


def _suggested(child: Mapping[str, object]) -> bool:
    content = child.get("content")
    return isinstance(content, Mapping) and content.get("suggested") is True


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


@dataclass(slots=True)
class _Entry:
    room_id: str
    depth: int
    via: tuple[str, ...] = ()
    info: RoomInfo | None = None
    known: dict[str, object] | None = None
    """A summary the parent's server already gave (used for rooms that are not spaces)."""


class SpaceHierarchy:
    def __init__(
        self,
        store: RoomStore,
        reader: EventReader,
        server_name: str = "",
        remote: RemoteSpaces | None = None,
    ) -> None:
        self.store = store
        self.reader = reader
        self.server_name = server_name
        self.remote = remote

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

    async def _remote_visible(self, user_id: str, summary: Mapping[str, object]) -> bool:
        """Whether ``user_id`` may see a room we do not hold, from its summary (as
        Synapse's ``_is_remote_room_accessible``): public or knockable (the summary has
        no version to check knocking against), world readable, or restricted to a room
        the user is joined to here."""
        rule = summary.get("join_rule", "public")
        if rule in ("public", "knock", "knock_restricted"):
            return True
        if summary.get("world_readable") is True:
            return True
        allowed = summary.get("allowed_room_ids")
        for room_id in allowed if isinstance(allowed, list) else []:
            if isinstance(room_id, str):
                info = await room_info(self.store, self.reader, room_id, user_id)
                if info is not None and info.membership(user_id) == "join":
                    return True
        return False

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
        stack = [_Entry(req.room_id, 0, info=root)]
        visited: set[str] = set()
        rooms: list[dict[str, object]] = []
        seen = 0
        fetches = 0
        stop_asking = trio.current_time() + REMOTE_TIME_BUDGET_S
        while stack and len(visited) < MAX_ROOMS_WALKED:
            entry = stack.pop()
            if entry.room_id in visited:
                continue
            visited.add(entry.room_id)
            info = entry.info or await room_info(self.store, self.reader, entry.room_id, user_id)
            known: dict[str, dict[str, object]] = {}
            inaccessible: frozenset[str] = frozenset()
            if info is not None:
                if not await can_see(self.store, info, user_id):
                    continue
                summary = room_summary(info)
                children = await self._children(info) if info.room_type == "m.space" else []
            else:
                summary, children = {}, []
                if entry.known is not None and (
                    entry.known.get("room_type") != "m.space" or entry.depth >= req.max_depth
                ):
                    summary = entry.known
                elif (
                    self.remote is not None
                    and fetches < MAX_REMOTE_FETCHES
                    and trio.current_time() < stop_asking
                ):
                    fetches += 1
                    via = [v for v in entry.via if v != self.server_name]
                    found = await self.remote.fetch(entry.room_id, via, req.suggested_only)
                    if found is not None:
                        summary = found.room
                        children = sorted(
                            (c for c in found.children_state if _valid_child(c)),
                            key=_child_sort_key,
                        )
                        known, inaccessible = found.children, found.inaccessible
                if not summary or not await self._remote_visible(user_id, summary):
                    continue
            if seen >= req.skip:
                if len(rooms) >= req.limit:
                    return {"rooms": rooms, "next_batch": encode_token(req, seen)}
                rooms.append({**summary, "room_id": entry.room_id, "children_state": children})
            seen += 1
            if entry.depth >= req.max_depth:
                continue
            for child in reversed(children):
                if req.suggested_only and not _suggested(child):
                    continue
                child_id = str(child.get("state_key"))
                if child_id not in visited and child_id not in inaccessible:
                    stack.append(
                        _Entry(child_id, entry.depth + 1, _via(child), known=known.get(child_id))
                    )
        return {"rooms": rooms}

    async def for_server(
        self, origin: str, room_id: str, suggested_only: bool
    ) -> dict[str, object]:
        """``GET /_matrix/federation/v1/hierarchy/{roomId}`` (server-server
        space_hierarchy.yaml): the room's summary with its ``m.space.child`` events,
        summaries of the children we hold that ``origin`` may see, and the IDs of those
        it may not (children we do not hold are left out, as the spec says). As
        Synapse, only rooms this server is joined to are summarised, and at most
        ``MAX_CHILDREN_FOR_SERVER`` children.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` if we do not hold the room or ``origin``
                may not see it (the same answer, so nothing is learnt).
        """
        root = await self._held(room_id)
        if root is None or not await can_server_see(self.store, root, origin):
            raise not_found("Room does not exist.")
        children = await self._children(root) if root.room_type == "m.space" else []
        if suggested_only:
            children = [c for c in children if _suggested(c)]
        summaries: list[dict[str, object]] = []
        inaccessible: list[str] = []
        for child in children[:MAX_CHILDREN_FOR_SERVER]:
            child_id = str(child.get("state_key"))
            info = await self._held(child_id)
            if info is None:
                continue
            if await can_server_see(self.store, info, origin):
                summaries.append(room_summary(info))
            else:
                inaccessible.append(child_id)
        return {
            "room": {**room_summary(root), "children_state": children},
            "children": summaries,
            "inaccessible_children": inaccessible,
        }

    async def remote_summary(
        self, user_id: str | None, room_id: str, via: Sequence[str]
    ) -> dict[str, object] | None:
        """The summary of a room we do not hold, from the ``via`` servers (MSC3266
        ``/room_summary`` with ``via``, as Synapse), or None if it cannot be had or
        ``user_id`` may not see it."""
        if self.remote is None:
            return None
        via = [v for v in via if v != self.server_name]
        found = await self.remote.fetch(room_id, via, True) if via else None
        if found is None:
            return None
        if user_id is None:
            visible = found.room.get("join_rule", "public") in (
                "public",
                "knock",
                "knock_restricted",
            ) or (found.room.get("world_readable") is True)
        else:
            visible = await self._remote_visible(user_id, found.room)
        return {**found.room, "room_id": room_id} if visible else None

    async def _held(self, room_id: str) -> RoomInfo | None:
        """The room's info if a user of ours is joined to it (our state is current)."""
        if not await self.store.db.read(dag.host_in_room, room_id, self.server_name):
            return None
        return await room_info(self.store, self.reader, room_id)
