"""The joining side of federation: our user joins a room another server holds.

server-server-api.md "Joining Rooms": ask a resident server for a join event template
(``GET /v1/make_join/{roomId}/{userId}?ver=...``, every room version we support),
fill it in (our ``origin``, ``origin_server_ts`` and the member content), hash and
sign it, and hand it back (``PUT /v2/send_join/{roomId}/{eventId}``); the answer holds
the room's state before the join and the auth chain of that state.

Checks on the answer (server-server-api.md "Checks performed on receipt of a PDU",
applied to every event of it): signatures of every required server (events that fail
are dropped), content hashes (a mismatch redacts the event, in the writer), each
event's auth against its auth events (the writer stores failures as rejected, never as
state) and that the ``event`` it returns (a resident may countersign a restricted
join) is the event we signed. The state the join is placed on holds only the state
events that passed; a state that lacks the room's create event, or whose auth chain
names events missing from the answer, fails the attempt.

Storing: the state and auth chain go in as outliers in a few large write transactions
(:meth:`RoomWriter.receive_batch`), then the join as a *new* event whose state before
is the returned state (:meth:`RoomWriter.receive_pdu`): from then on the room is held
here like any other (/sync shows it, our events go out through the federation sender,
the resident's reach us through ``PUT /send``).

Candidate servers are tried in order, as Synapse's ``_try_destination_list``: on to the
next when one is unreachable, answers 5xx, ``M_NOT_FOUND`` or
``M_UNABLE_TO_AUTHORISE_JOIN``, or gives an answer that does not verify; any other
refusal (403 ``M_FORBIDDEN``: not invited, banned, the join rules) is the client's
answer at once. When every server failed: 502 ``M_UNKNOWN``, as Synapse ("Failed to
make_join via any server"); but when ``federation_domain_whitelist`` left out every
server (nothing was sent), 403 ``M_FORBIDDEN`` "Federation denied", the answer the
directory query gives for such a server (Synapse answers 502 here; a refusal by our
own config is not a failure of the other side). A room version we do not know (named
by the resident, or its make_join refusal for the versions we sent): 400
``M_INCOMPATIBLE_ROOM_VERSION`` with ``room_version``, as Synapse's
IncompatibleRoomVersionError (SyTest 30room-join.pl checks both).

The ``v2/send_join`` answer is read as a stream, its events verified and stored in
bounded batches (federation/join_answer.py, issue #11), up to
:data:`SEND_JOIN_MAX_BYTES`; the rare ``v1`` answer is read whole, up to
:data:`V1_SEND_JOIN_MAX_BYTES`. An attempt that fails after part of the answer was
stored leaves those events as outliers: they are no room state, and a retry reuses
them.

Partial state (joins-v2.yaml ``omit_members``, issue #11): for a room we hold nothing
of, the join asks for the state without the members. An answer with
``members_omitted: true`` is stored the same way and the room is handed to the
background resync (federation/partial_state.py), which fills in the members; an
answer in full (a resident that ignores the flag) is a full join.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import trio
from nacl.signing import SigningKey

from pocketserver.core.crypto import SignatureError
from pocketserver.core.events import EventFormatError, compute_event_id
from pocketserver.core.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from pocketserver.errors import MatrixError
from pocketserver.federation.client import LONG_TIMEOUT_S
from pocketserver.federation.errors import (
    FederationBlocked,
    FederationError,
    FederationHttpError,
    unknown_endpoint,
)
from pocketserver.federation.event_keys import verify_and_collect
from pocketserver.federation.join_answer import AnswerIncomplete, StagedAnswer
from pocketserver.federation.json_items import JsonStreamError
from pocketserver.federation.keyring import Keyring
from pocketserver.federation.partial_state import PartialStateResync
from pocketserver.federation.requests import StreamingRequests
from pocketserver.rooms.building import finish_pdu
from pocketserver.rooms.store import StateKey
from pocketserver.rooms.writer import EventKind, MissingEventsError, PersistedEvent, RoomWriter

log = logging.getLogger(__name__)

MEMBER = "m.room.member"
JOIN_AUTHORISED_VIA = "join_authorised_via_users_server"
MAKE_JOIN_TIMEOUT_S = 60.0
SEND_JOIN_MAX_BYTES = 1 << 30
"""A streamed answer is never held whole; this bounds the disk a join may use."""
V1_SEND_JOIN_MAX_BYTES = 64 << 20
MAX_CANDIDATES = 10
"""Servers tried for one join at most (a directory answer may list hundreds)."""
_FAILOVER_ERRCODES = frozenset({"M_NOT_FOUND", "M_UNABLE_TO_AUTHORISE_JOIN"})


class _TryNext(Exception):
    """This candidate failed in a way another server may not: try the next one."""


class _Denied(_TryNext):
    """``federation_domain_whitelist`` does not allow this server (nothing was sent)."""


@dataclass(frozen=True, slots=True)
class _Template:
    room_version: str
    event: dict[str, object]


def _path(version: str, *parts: str) -> str:
    return f"/_matrix/federation/{version}/" + "/".join(quote(p, safe="") for p in parts)


def _content(pdu: Mapping[str, object]) -> Mapping[str, object]:
    content = pdu.get("content")
    return content if isinstance(content, Mapping) else {}


def _unsupported(room_version: object) -> MatrixError:
    extra = {"room_version": room_version} if isinstance(room_version, str) else {}
    return MatrixError(
        400,
        "M_INCOMPATIBLE_ROOM_VERSION",
        f"This server does not support room version {room_version}",
        **extra,
    )


class RemoteJoins:
    """Joins of our users to rooms held by other servers (see the module docstring)."""

    def __init__(
        self,
        writer: RoomWriter,
        keyring: Keyring,
        client: StreamingRequests,
        server_name: str,
        signing_key: SigningKey,
        partial: PartialStateResync | None = None,
    ) -> None:
        """``partial``: ask for partial-state joins (``omit_members``) and hand such
        rooms to this resync; None: always ask for the full state."""
        self.partial = partial
        self.writer = writer
        self.keyring = keyring
        self.client = client
        self.server_name = server_name
        self._signing_key = signing_key

    async def join(
        self,
        user_id: str,
        room_id: str,
        servers: Sequence[str],
        content: Mapping[str, object],
    ) -> PersistedEvent:
        """Join ``user_id`` to ``room_id`` through the first of ``servers`` that lets
        them; ``content`` is the member event content (``membership`` is set here).

        Raises:
            MatrixError: the resident's refusal (403 ...), 400
                ``M_INCOMPATIBLE_ROOM_VERSION``, or 502 ``M_UNKNOWN`` when no server
                could be used (nothing was stored for the room then).
        """
        candidates = [s for s in dict.fromkeys(servers) if s and s != self.server_name]
        denied = 0
        for server in candidates[:MAX_CANDIDATES]:
            try:
                return await self._join_via(server, user_id, room_id, content)
            except _Denied:
                denied += 1
            except _TryNext as e:
                log.info("joining %s via %s failed: %s", room_id, server, e)
        if candidates and denied == len(candidates[:MAX_CANDIDATES]):
            raise MatrixError(403, "M_FORBIDDEN", f"Federation denied with {candidates[0]}")
        raise MatrixError(502, "M_UNKNOWN", f"Failed to join {room_id} via any server")

    async def _join_via(
        self, server: str, user_id: str, room_id: str, content: Mapping[str, object]
    ) -> PersistedEvent:
        template = await self._make_join(server, user_id, room_id)
        event_id, pdu = self._fill(template, user_id, room_id, content)
        version = template.room_version
        database = self.writer.store.db.path
        async with StagedAnswer.beside(database, self.keyring, room_id, version) as answer:
            await self._request(
                server, "send_join", self._send_join(server, room_id, event_id, pdu, answer)
            )
            return await self._store(server, room_id, version, event_id, pdu, answer)

    async def _send_join(
        self,
        server: str,
        room_id: str,
        event_id: str,
        pdu: Mapping[str, object],
        answer: StagedAnswer,
    ) -> None:
        """``v2/send_join``, its answer streamed into ``answer``; a server that does
        not know it (404/405 without an errcode or ``M_UNRECOGNIZED``) is asked
        ``v1/send_join``, whose answer comes in ``[200, {...}]``, as Synapse falls back
        (``is_unknown_endpoint``)."""
        try:
            async with self.client.stream(
                "PUT",
                server,
                _path("v2", "send_join", room_id, event_id),
                query={"omit_members": "true"} if await self._may_be_partial(room_id) else None,
                content=pdu,
                timeout_s=LONG_TIMEOUT_S,
                max_size=SEND_JOIN_MAX_BYTES,
            ) as response:
                await answer.read_stream(response.aiter_bytes())
            return
        except FederationHttpError as e:
            if not unknown_endpoint(e):
                raise
        except JsonStreamError as e:
            raise _TryNext(f"the send_join answer: {e}") from None
        old = await self.client.put_json(
            server,
            _path("v1", "send_join", room_id, event_id),
            pdu,
            timeout_s=LONG_TIMEOUT_S,
            max_size=V1_SEND_JOIN_MAX_BYTES,
        )
        if not (isinstance(old, list) and len(old) == 2 and old[0] == 200):
            raise _TryNext("the send_join answer is not an object")
        if not isinstance(old[1], dict):
            raise _TryNext("the send_join answer is not an object")
        await answer.read_whole(old[1])

    async def _may_be_partial(self, room_id: str) -> bool:
        """Ask for a partial state only for a room we hold nothing of: a rejoin builds
        on the state we hold (the resync completes groups made since the join only)."""
        if self.partial is None:
            return False
        return await self.writer.store.room_version(room_id) is None

    async def _request(self, server: str, what: str, call: Any) -> Any:
        """Await one request; map its failure to "try the next server" or the
        client's error (see the module docstring)."""
        try:
            return await call
        except FederationHttpError as e:
            if e.errcode == "M_INCOMPATIBLE_ROOM_VERSION":
                room_version = e.body.get("room_version") if isinstance(e.body, dict) else None
                raise _unsupported(room_version) from None
            if e.status >= 500 or e.errcode in _FAILOVER_ERRCODES or e.errcode is None:
                raise _TryNext(f"{what}: {e}") from None
            if 400 <= e.status < 500:
                raise MatrixError(
                    e.status, e.errcode, e.error or f"{server} refused the {what}"
                ) from None
            raise _TryNext(f"{what}: {e}") from None
        except FederationBlocked as e:
            raise _Denied(f"{what}: {e}") from None
        except FederationError as e:
            raise _TryNext(f"{what}: {e}") from None

    async def _make_join(self, server: str, user_id: str, room_id: str) -> _Template:
        answer = await self._request(
            server,
            "make_join",
            self.client.get_json(
                server,
                _path("v1", "make_join", room_id, user_id),
                query={"ver": list(KNOWN_ROOM_VERSIONS)},
                timeout_s=MAKE_JOIN_TIMEOUT_S,
            ),
        )
        if not isinstance(answer, dict):
            raise _TryNext("the make_join answer is not an object")
        # joins-v1.yaml: room_version may be absent for version 1.
        room_version = answer.get("room_version", "1")
        if room_version not in KNOWN_ROOM_VERSIONS:
            raise _unsupported(room_version)
        event = answer.get("event")
        if not isinstance(event, dict):
            raise _TryNext("the make_join answer has no event")
        if (
            event.get("type") != MEMBER
            or event.get("room_id") != room_id
            or event.get("sender") != user_id
            or event.get("state_key") != user_id
            or _content(event).get("membership") != "join"
        ):
            raise _TryNext("the make_join template is not our user's join to that room")
        return _Template(str(room_version), event)

    def _fill(
        self,
        template: _Template,
        user_id: str,
        room_id: str,
        content: Mapping[str, object],
    ) -> tuple[str, dict[str, object]]:
        """The signed join event built on the template."""
        pdu = {
            k: v
            for k, v in template.event.items()
            if k not in ("hashes", "signatures", "unsigned", "event_id", "origin")
        }
        member: dict[str, object] = {**content, "membership": "join"}
        via = _content(template.event).get(JOIN_AUTHORISED_VIA)
        if isinstance(via, str):  # a restricted join the resident will countersign
            member[JOIN_AUTHORISED_VIA] = via
        else:
            member.pop(JOIN_AUTHORISED_VIA, None)
        pdu.update(
            content=member,
            sender=user_id,
            state_key=user_id,
            room_id=room_id,
            type=MEMBER,
            origin_server_ts=int(time.time() * 1000),
        )
        if get_room_version(template.room_version).event_ids_in_pdu:
            pdu["origin"] = self.server_name  # v1/v2 events name their origin
        try:
            return finish_pdu(pdu, template.room_version, self.server_name, self._signing_key)
        except (EventFormatError, KeyError, TypeError, ValueError) as e:
            raise _TryNext(f"the make_join template is malformed: {e}") from None

    async def _store(
        self,
        server: str,
        room_id: str,
        room_version: str,
        event_id: str,
        pdu: dict[str, object],
        answer: StagedAnswer,
    ) -> PersistedEvent:
        join = self._returned_join(answer.fields.event, room_version, event_id, pdu)
        if await answer.state_count() == 0:
            raise _TryNext("the send_join answer has no state")
        if answer.dropped:
            log.info(
                "send_join answer of %s for %s: %d events with bad signatures dropped",
                server,
                room_id,
                answer.dropped,
            )
        try:
            state = await answer.store(self.writer, server)
        except (AnswerIncomplete, EventFormatError) as e:
            raise _TryNext(f"the send_join state does not hold together: {e}") from None
        if ("m.room.create", "") not in state:
            raise _TryNext("the send_join state has no valid m.room.create event")
        # A resident that ignored omit_members answered in full: a full join.
        partial = self.partial if answer.fields.members_omitted else None
        if partial is not None:
            servers = [server, *answer.fields.servers_in_room]
            await partial.mark_partial(room_id, event_id, room_version, servers)
        try:
            persisted = await self._store_join(server, room_version, join, state)
        except BaseException:
            if partial is not None:
                with trio.CancelScope(shield=True):
                    await partial.unmark(room_id)
            raise
        if partial is not None:
            partial.start(room_id)
        return persisted

    async def _store_join(
        self,
        server: str,
        room_version: str,
        join: dict[str, object],
        state: dict[StateKey, str],
    ) -> PersistedEvent:
        try:
            join_keys, join_errors = await verify_and_collect(self.keyring, [(join, room_version)])
            if join_errors[0] is not None:
                raise join_errors[0]
            persisted = await self.writer.receive_pdu(
                join, room_version, join_keys, kind=EventKind.NEW, state_before=state, origin=server
            )
        except (MissingEventsError, EventFormatError, SignatureError, FederationError) as e:
            raise _TryNext(f"our join could not be stored: {e}") from None
        if persisted.rejected is not None:
            raise MatrixError(403, "M_FORBIDDEN", f"The join is not allowed: {persisted.rejected}")
        return persisted

    @staticmethod
    def _returned_join(
        returned: object, room_version: str, event_id: str, ours: dict[str, object]
    ) -> dict[str, object]:
        """The join the resident returned (maybe countersigned) if it is the event we
        signed, else ours (joins-v2.yaml: ``event`` is only required for restricted
        joins)."""
        if not isinstance(returned, dict):
            return ours
        try:
            same = compute_event_id(returned, room_version) == event_id
        except (EventFormatError, KeyError, TypeError, ValueError):
            same = False
        unsigned_same = {k: v for k, v in returned.items() if k not in ("signatures", "unsigned")}
        ours_same = {k: v for k, v in ours.items() if k not in ("signatures", "unsigned")}
        if not same or unsigned_same != ours_same:
            raise _TryNext("the send_join answer returned another join event than ours")
        signatures = returned.get("signatures")
        own = ours.get("signatures")
        if not isinstance(signatures, dict) or not isinstance(own, dict):
            return ours
        merged = {**signatures, **own}  # never let the resident replace our signature
        return {**ours, "signatures": merged}
