"""Asking other servers about rooms we do not hold: ``GET /_matrix/federation/v1/
hierarchy/{roomId}`` (server-server space_hierarchy.yaml), for the client's space
hierarchy and room summary.

As Synapse (``FederationClient.get_room_hierarchy``): the servers named in ``via`` are
tried in turn (at most ``MAX_SERVERS``), the first valid answer wins, and answers are
cached for a while (the spec: "Responses to this endpoint should be cached for a period
of time"; Synapse keeps them 5 minutes) in a budget-bounded cache. An answer must name
the room asked for; children events and room summaries that are not objects are
dropped, child events keep only the stripped state keys. Any failure makes the room
unknown (None): the walk goes on without it, and the failure is remembered for
``FAILURE_TTL_S`` so that paging through a space does not wait on a dead server again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from urllib.parse import quote

from pocketserver.cache import MemoryBudget
from pocketserver.core.identifiers import is_valid_server_name
from pocketserver.federation.answer_cache import AnswerCache
from pocketserver.federation.errors import FederationError
from pocketserver.federation.requests import JsonRequests
from pocketserver.rooms.hierarchy import RemoteSpace

log = logging.getLogger(__name__)

PATH = "/_matrix/federation/v1/hierarchy/"
MAX_SERVERS = 3
"""Servers of a ``via`` list tried (Synapse's ``MAX_SERVERS_PER_SPACE``)."""
TIMEOUT_S = 10.0
MAX_ANSWER = 2 * 1024 * 1024
TTL_S = 300.0
FAILURE_TTL_S = 60.0
_STRIPPED_KEYS = ("type", "state_key", "content", "sender", "origin_server_ts")
CACHE_SHARE = 0.01


def parse_answer(room_id: str, answer: object) -> RemoteSpace | None:
    """The answer as a :class:`RemoteSpace`, or None if it is not about ``room_id``."""
    if not isinstance(answer, dict):
        return None
    room = answer.get("room")
    if not isinstance(room, dict) or room.get("room_id") != room_id:
        return None
    room = dict(room)
    state = room.pop("children_state", [])
    children = answer.get("children", [])
    inaccessible = answer.get("inaccessible_children", [])
    if not (
        isinstance(state, list) and isinstance(children, list) and isinstance(inaccessible, list)
    ):
        return None
    return RemoteSpace(
        room=room,
        children_state=[
            {k: e[k] for k in _STRIPPED_KEYS if k in e} for e in state if isinstance(e, dict)
        ],
        children={
            c["room_id"]: c
            for c in children
            if isinstance(c, dict) and isinstance(c.get("room_id"), str)
        },
        inaccessible=frozenset(r for r in inaccessible if isinstance(r, str)),
    )


class RemoteHierarchy:
    """:class:`~pocketserver.rooms.hierarchy.RemoteSpaces` through federation."""

    def __init__(
        self,
        requests: JsonRequests,
        budget: MemoryBudget,
        *,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._requests = requests
        kwargs = {"clock": clock} if clock is not None else {}
        self._cache: AnswerCache[tuple[str, bool], RemoteSpace | None] = AnswerCache(
            budget, "remote_hierarchies", CACHE_SHARE, ttl_s, **kwargs
        )

    @property
    def cache(self) -> AnswerCache[tuple[str, bool], RemoteSpace | None]:
        return self._cache

    async def fetch(
        self, room_id: str, via: Sequence[str], suggested_only: bool
    ) -> RemoteSpace | None:
        hit, cached = self._cache.lookup((room_id, suggested_only))
        if hit:
            return cached
        servers = [s for s in dict.fromkeys(via) if is_valid_server_name(s)][:MAX_SERVERS]
        for server in servers:
            try:
                answer = await self._requests.get_json(
                    server,
                    PATH + quote(room_id, safe=""),
                    query={"suggested_only": "true" if suggested_only else "false"},
                    timeout_s=TIMEOUT_S,
                    max_size=MAX_ANSWER,
                )
            except FederationError as e:
                log.info("hierarchy of %s from %s: %s", room_id, server, e)
                continue
            found = parse_answer(room_id, answer)
            if found is None:
                log.info("hierarchy of %s from %s: not a valid answer", room_id, server)
                continue
            self._cache.set((room_id, suggested_only), found)
            return found
        if servers:
            self._cache.set((room_id, suggested_only), None, FAILURE_TTL_S)
        return None
