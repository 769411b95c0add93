"""A join's answer, read as a stream and stored in bounded steps (issue #11).

The ``send_join`` answer (joins-v2.yaml) of a big room is tens of MB: 25,000 state
events for a room of 20,000 members, 200,000 for Matrix HQ. Read whole it costs
several times its size in Python objects. Here it never is:

1. The body is parsed as it arrives (:class:`~pocketserver.federation.json_items.
   JsonItems`): each ``state`` / ``auth_chain`` element comes out on its own.
2. Every :data:`VERIFY_BATCH` events, their signatures are checked with the keyring
   (server-server-api.md "Checks performed on receipt of a PDU", step 2: events that
   fail are dropped) and the survivors are written to a scratch SQLite file
   (storage/join_staging.py), since they may arrive in any order (Synapse sends its
   state and auth chain unordered).
3. Then they are taken out lowest depth first, :data:`STORE_PAGE` at a time, and handed
   to :meth:`RoomWriter.receive_batch` as outliers: content hashes, auth against their
   auth events, batched write transactions, all as before. An event whose auth events
   are not stored yet waits for a later pass (an honest room needs one pass: auth
   events are ancestors, of lower depth); a pass that stores nothing means the answer
   names auth events it does not hold, and the attempt fails.
4. The state the join is placed on is read back from the scratch file: the accepted
   state events only.

What stays in memory: one page of events, the signing keys, and the final
``(type, state_key) -> event_id`` map the join's state needs.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trio

from pocketserver.core.events import EventFormatError, auth_event_ids, compute_event_id
from pocketserver.federation.event_keys import Keys, verify_and_collect
from pocketserver.federation.json_items import Item, JsonItems, Member
from pocketserver.federation.keyring import Keyring
from pocketserver.rooms.store import StateKey
from pocketserver.rooms.writer import EventKind, MissingEventsError, RoomWriter
from pocketserver.storage import join_staging as staging

log = logging.getLogger(__name__)
T = TypeVar("T")

VERIFY_BATCH = 500
"""Events whose signatures are checked (and staged) together."""
STORE_PAGE = 1000
"""Events handed to the room writer at once."""


class AnswerIncomplete(Exception):
    """The answer's events do not hold together (auth events missing from it)."""


@dataclass
class AnswerFields:
    """The small members of the answer (the events themselves are staged)."""

    event: object = None
    members_omitted: bool = False
    servers_in_room: list[str] = field(default_factory=list)


class StagedAnswer:
    """One join attempt's answer: staged, verified, then stored. Use as a context
    manager (the scratch file is removed on exit)."""

    def __init__(
        self,
        scratch: Path,
        keyring: Keyring,
        room_id: str,
        room_version: str,
        state_array: str = "state",
    ) -> None:
        """``state_array``: the answer's member listing the state (``state`` in a
        ``send_join`` answer, ``pdus`` in a ``/state`` answer); ``auth_chain`` is
        the other one."""
        self._path = scratch
        self._state_array = state_array
        self._arrays = (state_array, "auth_chain")
        self._keyring = keyring
        self.room_id = room_id
        self.room_version = room_version
        self.keys: Keys = {}
        self.fields = AnswerFields()
        self.dropped = 0
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[dict[str, object], bool]] = []

    @classmethod
    def beside(
        cls,
        database: Path,
        keyring: Keyring,
        room_id: str,
        room_version: str,
        state_array: str = "state",
    ) -> StagedAnswer:
        """A scratch file next to the database (not in /tmp: often RAM on a Pi)."""
        name = f"{database.name}.join-{secrets.token_hex(6)}.tmp"
        return cls(database.with_name(name), keyring, room_id, room_version, state_array)

    async def __aenter__(self) -> StagedAnswer:
        self._conn = await trio.to_thread.run_sync(staging.open_scratch, self._path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._path.unlink(missing_ok=True)

    async def _db(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(conn, *args)`` on the scratch file in a worker thread."""
        assert self._conn is not None
        return await trio.to_thread.run_sync(fn, self._conn, *args)

    # --- reading ----------------------------------------------------------------------

    async def read_stream(self, chunks: AsyncIterator[bytes]) -> AnswerFields:
        """Parse a streamed answer object, staging its events as they come.

        Raises:
            json_items.JsonStreamError: not a JSON object of that shape.
        """
        reader = JsonItems(self._arrays)
        async for chunk in chunks:
            await self._take(reader.feed(chunk))
        await self._take(reader.close())
        await self._flush()
        return self.fields

    async def read_whole(self, answer: Mapping[str, object]) -> AnswerFields:
        """The same for an answer already parsed (``v1/send_join``)."""
        parts: list[Item | Member] = []
        for key, value in answer.items():
            if key in self._arrays and isinstance(value, list):
                parts.extend(Item(key, v) for v in value)
            else:
                parts.append(Member(key, value))
        await self._take(parts)
        await self._flush()
        return self.fields

    async def _take(self, parts: Iterable[Item | Member]) -> None:
        for part in parts:
            if isinstance(part, Member):
                self._member(part)
            elif isinstance(part.value, dict):
                self._pending.append((part.value, part.key == self._state_array))
                if len(self._pending) >= VERIFY_BATCH:
                    await self._flush()

    def _member(self, member: Member) -> None:
        if member.key == "event":
            self.fields.event = member.value
        elif member.key == "members_omitted":
            self.fields.members_omitted = member.value is True
        elif member.key == "servers_in_room" and isinstance(member.value, list):
            self.fields.servers_in_room = [s for s in member.value if isinstance(s, str)]

    async def _flush(self) -> None:
        """Check the signatures of the pending events and stage the good ones."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        ided: list[tuple[str, dict[str, object], bool]] = []
        for pdu, is_state in batch:
            try:
                ided.append((compute_event_id(pdu, self.room_version), pdu, is_state))
            except (EventFormatError, KeyError, TypeError, ValueError):
                self.dropped += 1
        seen = await self._db(staging.known_ids, [eid for eid, _, _ in ided])
        fresh = [(eid, pdu, s) for eid, pdu, s in ided if eid not in seen]
        keys, errors = await verify_and_collect(
            self._keyring, [(pdu, self.room_version) for _, pdu, _ in fresh]
        )
        for server, server_keys in keys.items():
            self.keys.setdefault(server, {}).update(server_keys)
        rows = []
        for (eid, pdu, is_state), error in zip(fresh, errors, strict=True):
            if error is not None:
                self.dropped += 1
                continue
            depth = pdu.get("depth")
            etype, skey = pdu.get("type"), pdu.get("state_key")
            rows.append(
                (
                    eid,
                    depth if isinstance(depth, int) else 0,
                    is_state,
                    etype if isinstance(etype, str) else None,
                    skey if isinstance(skey, str) else None,
                    json.dumps(pdu, separators=(",", ":"), ensure_ascii=False),
                )
            )
        # Staged already: only an event listed as state now must be marked so.
        rows.extend(
            (eid, 0, True, None, None, "{}")
            for eid, _, is_state in ided
            if eid in seen and is_state
        )
        await self._db(staging.add, rows)

    async def state_count(self) -> int:
        return int(await self._db(staging.count_state))

    # --- storing ----------------------------------------------------------------------

    async def store(self, writer: RoomWriter, origin: str) -> dict[StateKey, str]:
        """Hand every staged event to the writer as an outlier (see the module
        docstring); return the accepted state.

        Raises:
            AnswerIncomplete: events name auth events the answer does not hold.
            EventFormatError: the room is known here with another version.
        """
        while (pending := await self._db(staging.count_pending)) > 0:
            progress = 0
            after = (-(1 << 62), -1)
            while page := await self._db(staging.next_page, after, STORE_PAGE):
                after = (page[-1].depth, page[-1].seq)
                pdus = {r.event_id: json.loads(r.pdu) for r in page}
                outcomes = await self._write(writer, pdus, origin)
                await self._db(staging.mark_done, outcomes)
                progress += len(outcomes)
            if progress == 0:
                raise AnswerIncomplete(f"{pending} events have auth events not in the answer")
        state: dict[StateKey, str] = {}
        for etype, skey, eid in await self._db(_all_state):
            state[(etype, skey)] = eid
        return state

    async def _write(
        self, writer: RoomWriter, pdus: dict[str, dict[str, object]], origin: str
    ) -> list[tuple[str, bool]]:
        """Store what can be stored of one page; ``(event_id, accepted)`` of each event
        done with (stored, or dropped by the writer's checks). Events whose auth
        events are not stored yet, nor in the page, are left for the next pass."""
        todo = dict(pdus)
        while todo:
            try:
                stored = await writer.receive_batch(
                    self.room_id,
                    self.room_version,
                    list(todo.values()),
                    self.keys,
                    kind=EventKind.OUTLIER,
                    origin=origin,
                )
            except MissingEventsError as e:
                todo = _without_dependents(todo, set(e.event_ids), self.room_version)
                continue
            ok = {p.event_id for p in stored if p.rejected is None}
            return [(eid, eid in ok) for eid in todo]
        return []


def _all_state(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return list(staging.accepted_state(conn))


def _without_dependents(
    pdus: dict[str, dict[str, object]], missing: set[str], room_version: str
) -> dict[str, dict[str, object]]:
    """``pdus`` less those citing a ``missing`` event, directly or through another."""
    blocked = set(missing)
    grew = True
    while grew:
        grew = False
        for eid, pdu in pdus.items():
            if eid not in blocked and blocked.intersection(auth_event_ids(pdu, room_version)):
                blocked.add(eid)
                grew = True
    return {eid: pdu for eid, pdu in pdus.items() if eid not in blocked}
