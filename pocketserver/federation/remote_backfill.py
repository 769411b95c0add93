"""History from other servers for ``/messages``: ``GET /_matrix/federation/v1/backfill``.

server-server-api.md "Backfilling and retrieving missing events": when a page of
``/messages`` spans a hole in our history (an event whose prev events we do not hold
in the timeline: the join of a room joined over federation, whose prev events are
the state held as outliers or unknown; a rejoin after time away), we ask a server in
the room for the events before those backward extremities (``v``, ``limit``
:data:`BACKFILL_EVENTS`), as Synapse's ``maybe_backfill`` does near the pagination
point. Each event is checked as any PDU and stored as *backfill* (rooms/writer.py:
negative stream orderings, never an extremity, never pushed or sent to /sync).
Bounded: one request per call, to at most :data:`SERVERS_TRIED` servers, an answer of
at most :data:`BACKFILL_MAX_BYTES`; a server that is down costs a log line and the
client gets what we hold (never a 500).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from pocketserver.errors import MatrixError
from pocketserver.federation.errors import FederationError
from pocketserver.federation.inbound import PduPipeline
from pocketserver.federation.requests import JsonRequests
from pocketserver.storage import dag

log = logging.getLogger(__name__)

BACKFILL_EVENTS = 100
"""Events asked for at once, whatever the page size: Synapse's
``NUMBER_OF_EVENTS_TO_BACKFILL`` (and the most it serves). One request then usually
reaches far enough that each event's prev events come in the same answer: a small
request ends at an event whose prev events we lack, whose state must be asked
(``/state_ids``), which not every server serves for every event (SyTest
50federation/34room-backfill.pl's server does not)."""
SERVERS_TRIED = 2
BACKFILL_TIMEOUT_S = 30.0
BACKFILL_MAX_BYTES = 16 << 20
EXTREMITIES = 5


class RemoteBackfill:
    """See the module docstring."""

    def __init__(self, pipeline: PduPipeline, client: JsonRequests, server_name: str) -> None:
        self.pipeline = pipeline
        self.store = pipeline.store
        self.client = client
        self.server_name = server_name

    async def fill(self, room_id: str, limit: int, low: int = 0, high: int | None = None) -> int:
        """Fetch events into the holes of our history between depths ``low`` and
        ``high`` (the span a ``/messages`` page of ``limit`` events covered), asking
        :data:`BACKFILL_EVENTS` whatever ``limit`` is, as Synapse; return how many were
        stored (0: no hole there, or no server could fill it)."""
        room_version = await self.store.room_version(room_id)
        if room_version is None:
            return 0
        extremities = await self.store.db.read(
            dag.backward_extremities, room_id, low, high, EXTREMITIES
        )
        if not extremities:
            return 0
        servers = await self.store.db.read(dag.joined_servers, room_id)
        candidates = sorted(s for s in servers if s and s != self.server_name)
        path = "/_matrix/federation/v1/backfill/" + quote(room_id, safe="")
        for server in candidates[:SERVERS_TRIED]:
            try:
                answer = await self.client.get_json(
                    server,
                    path,
                    query={"v": extremities, "limit": str(BACKFILL_EVENTS)},
                    timeout_s=BACKFILL_TIMEOUT_S,
                    max_size=BACKFILL_MAX_BYTES,
                )
            except FederationError as e:
                log.info("backfill of %s from %s failed: %s", room_id, server, e)
                continue
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            if not isinstance(pdus, list):
                log.info("backfill of %s from %s: no pdus in the answer", room_id, server)
                continue
            try:
                return await self.pipeline.backfill(
                    server, room_id, room_version, [p for p in pdus if isinstance(p, dict)]
                )
            except MatrixError as e:
                log.info("backfill of %s from %s failed: %s", room_id, server, e.error)
        return 0
