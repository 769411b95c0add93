"""The joining side of federation in process (federation/remote_join.py and
federation/remote_backfill.py): our user joins a room held by another server, which
here is a real resident (a second room writer and database with the resident side of
joins and history) behind a fake federation client. Refused and failed joins store
nothing; forged state from a resident never becomes room state."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import trio
from nacl.signing import VerifyKey

from pocketserver.cache import MemoryBudget
from pocketserver.config.model import RateLimit
from pocketserver.core.crypto import generate_signing_key
from pocketserver.core.event_filter import EventFilter
from pocketserver.errors import MatrixError
from pocketserver.federation.errors import (
    FederationBlocked,
    FederationHttpError,
    FederationUnreachable,
)
from pocketserver.federation.history import FederationHistory
from pocketserver.federation.inbound import PduPipeline
from pocketserver.federation.joins import ResidentMemberships
from pocketserver.federation.remote_backfill import RemoteBackfill
from pocketserver.federation.remote_directory import query_remote_alias
from pocketserver.federation.remote_join import RemoteJoins
from pocketserver.ratelimit import RateLimiter
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.history import History
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

from .conftest import ALICE, LOCAL, REMOTE, RemoteServer, current_state, rows, stored
from .test_federation_inbound import FakeKeyring

RALICE = f"@alice:{REMOTE}"
MALLORY = f"@mallory:{REMOTE}"
OTHER = "other.test"
JOIN = {"membership": "join"}


class Resident:
    """Another homeserver holding rooms: the real room writer, resident joins and
    history serving of pocketserver, on its own database, signing with ``remote``'s key."""

    def __init__(self, path: Path, remote: RemoteServer, local_writer: RoomWriter) -> None:
        self.db = Database(path, memory_bytes=16 << 20, synchronous="normal")
        self.store = RoomStore(self.db, MemoryBudget(64 << 20))
        self.writer = RoomWriter(self.store, REMOTE, remote.signing_key, Notifier())
        self.history = FederationHistory(self.store, EventReader(self.store))
        keys = remote.keys_with(local_writer)

        async def keys_for(
            pdu: Mapping[str, object], room_version: str
        ) -> Mapping[str, Mapping[str, VerifyKey]]:
            return keys

        self.joins = ResidentMemberships(
            self.writer, self.history, REMOTE, remote.signing_key, keys_for
        )

    async def room(self, preset: str = "public_chat", version: str = "10") -> str:
        return await create_room(
            self.writer, RALICE, RoomSettings(room_version=version, preset=preset)
        )

    async def say(self, room_id: str, *bodies: str) -> None:
        for body in bodies:
            await self.writer.send_event(
                room_id, RALICE, "m.room.message", {"msgtype": "m.text", "body": body}
            )


class FakeClient:
    """Routes our federation requests to the resident (as ``LOCAL``); servers in
    ``down`` are unreachable; ``tamper`` may rewrite a send_join answer."""

    def __init__(self, resident: Resident) -> None:
        self.resident = resident
        self.down: set[str] = set()
        self.blocked: set[str] = set()
        self.unknown: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.tamper: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.version_override: str | None = None
        self.v1_only = False
        self.queries: list[Any] = []
        self.truncate = False
        """Cut the streamed send_join answer in half."""
        self.ignore_omit = False
        """Answer in full whatever omit_members says (a resident without partial state)."""
        self.state_gate = trio.Event()
        """A resync's GET /state waits until this is set."""
        self.state_gate.set()
        """Answer v2 send_join as an old server does (404, no errcode)."""
        self.unserved: set[str] = set()
        """GET verbs answered 404 without an errcode (a server that does not serve them)."""

    def _check(self, destination: str, path: str) -> None:
        self.calls.append((destination, path.split("/")[4]))
        if destination in self.blocked:
            raise FederationBlocked(destination, "not in federation_domain_whitelist")
        if destination in self.down:
            raise FederationUnreachable(destination, "connection refused")
        if destination in self.unknown:
            raise FederationHttpError(destination, 404, "M_NOT_FOUND", "Unknown room", {})

    async def _pdus(self, ids: list[str]) -> list[dict[str, object]]:
        return [p async for p in self.resident.history.pdus_of(ids)]

    async def get_json(self, destination: str, path: str, **kwargs: Any) -> Any:
        await trio.lowlevel.checkpoint()
        self._check(destination, path)
        parts = [unquote(p) for p in path.split("/")]
        query = kwargs.get("query") or {}
        h = self.resident.history
        if parts[4] in self.unserved:
            raise FederationHttpError(destination, 404, None, None, None)
        try:
            if parts[4] == "make_join":
                answer = await self.resident.joins.make(
                    LOCAL, parts[5], parts[6], "join", list(query["ver"])
                )
                if self.version_override:
                    answer["room_version"] = self.version_override
                return answer
            if parts[4] == "backfill":
                return {
                    "pdus": await h.backfill(LOCAL, parts[5], list(query["v"]), int(query["limit"]))
                }
            if parts[4] == "state_ids":
                state = await h.state_ids(LOCAL, parts[5], str(query["event_id"]))
                return {"pdu_ids": state.pdu_ids, "auth_chain_ids": state.auth_chain_ids}
            if parts[4] == "event":
                return {"pdus": [await h.event(LOCAL, parts[5])]}
            if parts[4] == "event_auth":
                chain = await h.event_auth(LOCAL, parts[5], parts[6])
                return {"auth_chain": await self._pdus(chain)}
            if parts[4] == "query":
                room_id = "!known:" + REMOTE
                if query["room_alias"] != f"#known:{REMOTE}":
                    raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
                return {"room_id": room_id, "servers": [REMOTE, OTHER]}
        except MatrixError as e:
            raise FederationHttpError(destination, e.status, e.errcode, e.error, {}) from None
        raise AssertionError(path)

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, destination: str, path: str, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """``put_json``'s answer as JSON bytes in small chunks, as the real client
        streams a big answer."""
        query = kwargs.get("query") or {}
        self.queries.append(query)
        if method == "GET":  # a partial-state room's resync: GET /v1/state
            await self.state_gate.wait()
            self._check(destination, path)
            parts = [unquote(p) for p in path.split("/")]
            assert parts[3:5] == ["v1", "state"], path
            ids = await self.resident.history.state_ids(LOCAL, parts[5], query["event_id"])
            answer: Any = {
                "pdus": await self._pdus(ids.pdu_ids),
                "auth_chain": await self._pdus(ids.auth_chain_ids),
            }
        else:
            omit = query.get("omit_members") == "true" and not self.ignore_omit
            answer = await self.put_json(destination, path, kwargs["content"], omit=omit)
        data = json.dumps(answer).encode()
        if self.truncate:
            data = data[: len(data) // 2]

        class Body:
            async def aiter_bytes(self) -> AsyncIterator[bytes]:
                for i in range(0, len(data), 997):
                    await trio.lowlevel.checkpoint()
                    yield data[i : i + 997]

        yield Body()

    async def put_json(
        self, destination: str, path: str, content: Any, *, omit: bool = False, **kwargs: Any
    ) -> Any:
        await trio.lowlevel.checkpoint()
        self._check(destination, path)
        parts = [unquote(p) for p in path.split("/")]
        assert parts[4] == "send_join", path
        if self.v1_only and parts[3] == "v2":
            raise FederationHttpError(destination, 404, None, "Not found", {})
        assert parts[3] == ("v1" if self.v1_only else "v2"), path
        try:
            answer = await self.resident.joins.send_join(
                LOCAL, parts[5], parts[6], copy.deepcopy(content), omit_members=omit
            )
        except MatrixError as e:
            raise FederationHttpError(destination, e.status, e.errcode, e.error, {}) from None
        body: dict[str, Any] = {
            "origin": REMOTE,
            "event": answer.event,
            "state": await self._pdus(answer.state_ids),
            "auth_chain": await self._pdus(answer.auth_chain_ids),
        }
        if parts[3] == "v2":
            body["members_omitted"] = answer.members_omitted
            body["servers_in_room"] = answer.servers_in_room
        body = self.tamper(body) if self.tamper is not None else body
        return [200, body] if parts[3] == "v1" else body


@pytest.fixture
def resident(tmp_path: Path, remote: RemoteServer, writer: RoomWriter) -> Iterator[Resident]:
    r = Resident(tmp_path / "resident.db", remote, writer)
    yield r
    r.db.close()


@pytest.fixture
def client(resident: Resident) -> FakeClient:
    return FakeClient(resident)


@pytest.fixture
def keyring(remote: RemoteServer, writer: RoomWriter) -> FakeKeyring:
    return FakeKeyring(remote.keys_with(writer))


@pytest.fixture
def joins(writer: RoomWriter, keyring: FakeKeyring, client: FakeClient) -> RemoteJoins:
    return RemoteJoins(writer, keyring, client, LOCAL, writer._signing_key)  # type: ignore[arg-type]


def _room_events(db: Database, room_id: str) -> int:
    return int(rows(db, "SELECT count(*) FROM events WHERE room_id = ?", room_id)[0][0])


async def _refused(coro: Any, status: int, errcode: str) -> MatrixError:
    with pytest.raises(MatrixError) as caught:
        await coro
    assert (caught.value.status, caught.value.errcode) == (status, errcode), caught.value
    return caught.value


@pytest.mark.parametrize("version", ["1", "3", "10", "12"])
async def test_join_a_remote_room(
    joins: RemoteJoins, resident: Resident, writer: RoomWriter, db: Database, version: str
) -> None:
    room_id = await resident.room(version=version)
    await resident.say(room_id, "before")
    persisted = await joins.join(ALICE, room_id, [REMOTE], {"displayname": "Alice"})
    assert persisted.accepted
    assert persisted.live
    state = current_state(db, room_id)
    assert state[("m.room.member", ALICE)] == persisted.event_id
    assert ("m.room.member", RALICE) in state
    assert ("m.room.create", "") in state
    ev = stored(db, persisted.event_id)
    assert ev.pdu["content"] == {"displayname": "Alice", "membership": "join"}
    # The state and auth chain are held as outliers; the join has its place.
    assert not ev.outlier
    assert stored(db, state[("m.room.create", "")]).outlier
    # The resident has our join in its room too.
    assert current_state(resident.db, room_id)[("m.room.member", ALICE)] == persisted.event_id
    # Now the room is held here: a local event builds on the join.
    sent = await writer.send_event(room_id, ALICE, "m.room.message", {"body": "hi"})
    assert sent.accepted


async def test_a_server_without_v2_send_join_is_asked_v1(
    joins: RemoteJoins, resident: Resident, client: FakeClient, db: Database
) -> None:
    """As Synapse: v2 unknown there (404 without an errcode) -> v1 and its [200, {...}]."""
    room_id = await resident.room()
    client.v1_only = True
    persisted = await joins.join(ALICE, room_id, [REMOTE], {})
    assert persisted.accepted
    assert current_state(db, room_id)[("m.room.member", ALICE)] == persisted.event_id
    assert [c for c in client.calls if c[1] == "send_join"] == [
        (REMOTE, "send_join"),
        (REMOTE, "send_join"),
    ]


async def test_candidates_in_order_past_unreachable_and_unknown_servers(
    joins: RemoteJoins, resident: Resident, client: FakeClient, db: Database
) -> None:
    room_id = await resident.room()
    client.down.add("down.test")
    client.unknown.add(OTHER)
    await joins.join(ALICE, room_id, ["down.test", OTHER, LOCAL, REMOTE], {})
    assert client.calls[:3] == [
        ("down.test", "make_join"),
        (OTHER, "make_join"),
        (REMOTE, "make_join"),
    ]
    assert ("m.room.member", ALICE) in current_state(db, room_id)


async def test_a_refused_join_is_the_clients_403_and_stores_nothing(
    joins: RemoteJoins, resident: Resident, client: FakeClient, db: Database
) -> None:
    room_id = await resident.room(preset="private_chat")
    await _refused(joins.join(ALICE, room_id, [REMOTE, OTHER], {}), 403, "M_FORBIDDEN")
    assert client.calls == [(REMOTE, "make_join")]  # a refusal is not retried elsewhere
    assert _room_events(db, room_id) == 0


async def test_every_server_failing_is_502_and_stores_nothing(
    joins: RemoteJoins, resident: Resident, client: FakeClient, db: Database
) -> None:
    room_id = await resident.room()
    client.down.update({REMOTE, OTHER})
    await _refused(joins.join(ALICE, room_id, [REMOTE, OTHER], {}), 502, "M_UNKNOWN")
    await _refused(joins.join(ALICE, room_id, [], {}), 502, "M_UNKNOWN")
    assert _room_events(db, room_id) == 0


async def test_servers_our_config_denies(
    joins: RemoteJoins, resident: Resident, client: FakeClient, db: Database
) -> None:
    """Every server left out by federation_domain_whitelist: 403, nothing stored; a
    denied server among others is skipped."""
    room_id = await resident.room()
    client.blocked.update({OTHER, REMOTE})
    await _refused(joins.join(ALICE, room_id, [OTHER, REMOTE], {}), 403, "M_FORBIDDEN")
    assert _room_events(db, room_id) == 0
    client.blocked.discard(REMOTE)
    await joins.join(ALICE, room_id, [OTHER, REMOTE], {})
    assert ("m.room.member", ALICE) in current_state(db, room_id)
    client.blocked.add(REMOTE)
    await _refused(query_remote_alias(client, f"#known:{REMOTE}"), 403, "M_FORBIDDEN")


async def test_unknown_room_version_is_refused(
    joins: RemoteJoins, resident: Resident, client: FakeClient, db: Database
) -> None:
    room_id = await resident.room()
    client.version_override = "org.example.future"
    err = await _refused(
        joins.join(ALICE, room_id, [REMOTE], {}), 400, "M_INCOMPATIBLE_ROOM_VERSION"
    )
    assert err.extra == {"room_version": "org.example.future"}  # as Synapse
    assert _room_events(db, room_id) == 0


def _forge(body: dict[str, Any], key_version: str, remote: RemoteServer) -> list[str]:
    """Add to a send_join answer a power levels event making MALLORY all-powerful
    signed with a key that is not the resident's, and an unsigned member event; return
    their event IDs."""
    pl = next(p for p in body["state"] if p["type"] == "m.room.power_levels")
    forged_pl = copy.deepcopy(pl)
    forged_pl["content"]["users"] = {MALLORY: 100}
    forged_pl["origin_server_ts"] += 1
    impostor = RemoteServer(REMOTE, key_version)
    impostor.signing_key = generate_signing_key(key_version)
    forged_id, forged_pl = impostor.sign(
        {k: v for k, v in forged_pl.items() if k not in ("hashes", "signatures")}, "10"
    )
    member = copy.deepcopy(next(p for p in body["state"] if p["type"] == "m.room.member"))
    member.update(state_key=MALLORY, sender=MALLORY)
    member.pop("signatures")
    _, unsigned_member = remote.sign(
        {k: v for k, v in member.items() if k not in ("hashes", "signatures")}, "10"
    )
    unsigned_member.pop("signatures")
    body["state"] = [*body["state"], forged_pl, unsigned_member]
    return [forged_id]


async def test_forged_state_in_a_send_join_answer_is_not_stored(
    joins: RemoteJoins,
    resident: Resident,
    client: FakeClient,
    remote: RemoteServer,
    db: Database,
) -> None:
    room_id = await resident.room()
    genuine_pl = current_state(resident.db, room_id)[("m.room.power_levels", "")]
    forged: list[str] = []
    client.tamper = lambda body: (forged.extend(_forge(body, "forged_1", remote)), body)[1]
    persisted = await joins.join(ALICE, room_id, [REMOTE], {})
    assert persisted.accepted
    state = current_state(db, room_id)
    assert state[("m.room.power_levels", "")] == genuine_pl
    assert ("m.room.member", MALLORY) not in state
    assert forged
    assert not rows(db, "SELECT 1 FROM events WHERE event_id = ?", forged[0])
    assert not rows(db, "SELECT 1 FROM events WHERE sender = ?", MALLORY)


async def test_validly_signed_state_that_fails_auth_is_rejected_not_state(
    joins: RemoteJoins,
    resident: Resident,
    client: FakeClient,
    remote: RemoteServer,
    db: Database,
) -> None:
    """The resident signs (it may: MALLORY is its user) a power levels event from a
    user who is not in the room and lists it as the state: the auth rules reject it."""
    room_id = await resident.room()
    rstate = current_state(resident.db, room_id)
    genuine_pl = rstate[("m.room.power_levels", "")]
    auth = [rstate[("m.room.create", "")], genuine_pl]
    known = {e: stored(resident.db, e).pdu for e in auth}
    bad_id, bad_pl = remote.build(
        "10",
        room_id,
        MALLORY,
        "m.room.power_levels",
        {"users": {MALLORY: 100}},
        state_key="",
        prev=[rstate[("m.room.member", RALICE)]],
        auth=auth,
        depth=99,
        known={**known, rstate[("m.room.member", RALICE)]: {}},
    )

    def swap(body: dict[str, Any]) -> dict[str, Any]:
        body["state"] = [p for p in body["state"] if p["type"] != "m.room.power_levels"]
        body["state"].append(bad_pl)
        body["auth_chain"].append(stored(resident.db, genuine_pl).pdu)
        return body

    client.tamper = swap
    with contextlib.suppress(MatrixError):  # without power levels the join may fail
        await joins.join(ALICE, room_id, [REMOTE], {})
    state = current_state(db, room_id)
    assert state.get(("m.room.power_levels", "")) != bad_id
    assert stored(db, bad_id).rejected is not None


async def test_a_send_join_answer_with_another_join_event_fails_that_server(
    joins: RemoteJoins, resident: Resident, client: FakeClient, db: Database
) -> None:
    room_id = await resident.room()

    def other_event(body: dict[str, Any]) -> dict[str, Any]:
        body["event"] = {**body["event"], "content": {"membership": "join", "displayname": "X"}}
        return body

    client.tamper = other_event
    await _refused(joins.join(ALICE, room_id, [REMOTE], {}), 502, "M_UNKNOWN")
    assert ("m.room.member", ALICE) not in current_state(db, room_id)


async def test_an_answer_in_reverse_order_is_stored_in_auth_order(
    joins: RemoteJoins, resident: Resident, client: FakeClient, db: Database, tmp_path: Path
) -> None:
    """The answer is read as a stream and staged: events that come before their auth
    events (Synapse sends its state and chain unordered) are stored all the same, in
    small pages, and the scratch file is gone afterwards."""
    room_id = await resident.room()
    for i in range(30):
        user = f"@u{i}:{REMOTE}"
        await resident.writer.send_event(room_id, user, "m.room.member", JOIN, state_key=user)
    await resident.say(room_id, "hello")

    def reverse(body: dict[str, Any]) -> dict[str, Any]:
        every = [*body["auth_chain"], *body["state"]]
        every.sort(key=lambda p: -int(p["depth"]))
        state_ids = {id(p) for p in body["state"]}
        body["state"] = [p for p in every if id(p) in state_ids]
        body["auth_chain"] = [p for p in every if id(p) not in state_ids]
        return {"state": body["state"], **{k: v for k, v in body.items() if k != "state"}}

    client.tamper = reverse
    with _small_pages():
        persisted = await joins.join(ALICE, room_id, [REMOTE], {})
    assert persisted.accepted
    assert current_state(db, room_id) == {
        **current_state(resident.db, room_id),
        ("m.room.member", ALICE): persisted.event_id,
    }
    assert not list(db.path.parent.glob("*.join-*.tmp"))


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    from pocketserver.federation import join_answer

    old = join_answer.VERIFY_BATCH, join_answer.STORE_PAGE
    join_answer.VERIFY_BATCH, join_answer.STORE_PAGE = 7, 5
    try:
        yield
    finally:
        join_answer.VERIFY_BATCH, join_answer.STORE_PAGE = old


async def test_an_answer_missing_auth_events_fails_that_server(
    joins: RemoteJoins, resident: Resident, client: FakeClient, db: Database
) -> None:
    """The power levels event's auth events include the creator's join: an answer
    without it does not hold together; nothing becomes room state, and the next
    server is tried."""
    room_id = await resident.room()
    creator_join = current_state(resident.db, room_id)[("m.room.member", RALICE)]

    def drop(body: dict[str, Any]) -> dict[str, Any]:
        for key in ("state", "auth_chain"):
            body[key] = [p for p in body[key] if p["state_key"] != RALICE]
        return body

    client.tamper = drop
    with _small_pages():
        await _refused(joins.join(ALICE, room_id, [REMOTE, OTHER], {}), 502, "M_UNKNOWN")
    assert (OTHER, "make_join") in client.calls
    assert current_state(db, room_id) == {}
    assert not rows(db, "SELECT 1 FROM events WHERE event_id = ?", creator_join)
    assert not list(db.path.parent.glob("*.join-*.tmp"))


async def test_a_broken_json_answer_fails_that_server(
    joins: RemoteJoins, resident: Resident, client: FakeClient, db: Database
) -> None:
    room_id = await resident.room()
    client.truncate = True
    await _refused(joins.join(ALICE, room_id, [REMOTE], {}), 502, "M_UNKNOWN")
    assert current_state(db, room_id) == {}
    client.truncate = False
    assert (await joins.join(ALICE, room_id, [REMOTE], {})).accepted


async def test_remote_alias_query(client: FakeClient) -> None:
    assert await query_remote_alias(client, f"#known:{REMOTE}") == (
        f"!known:{REMOTE}",
        [REMOTE, OTHER],
    )
    await _refused(query_remote_alias(client, f"#nope:{REMOTE}"), 404, "M_NOT_FOUND")
    client.down.add(REMOTE)
    await _refused(query_remote_alias(client, f"#known:{REMOTE}"), 502, "M_UNKNOWN")


async def test_backfill_after_a_remote_join(
    joins: RemoteJoins,
    resident: Resident,
    client: FakeClient,
    writer: RoomWriter,
    keyring: FakeKeyring,
    db: Database,
) -> None:
    room_id = await resident.room()
    await resident.say(room_id, *[f"m{i}" for i in range(30)])
    await joins.join(ALICE, room_id, [REMOTE], {})
    backfill = RemoteBackfill(
        PduPipeline(writer, keyring, client),  # type: ignore[arg-type]
        client,
        LOCAL,
    )
    # A server that is down: nothing fetched, no error.
    client.down.add(REMOTE)
    assert await backfill.fill(room_id, 10) == 0
    client.down.clear()
    for _ in range(10):
        if not await backfill.fill(room_id, 10):
            break
    bodies = [
        r[0]
        for r in rows(
            db,
            "SELECT json_extract(json, '$.content.body') FROM events WHERE room_id = ?"
            " AND type = 'm.room.message' AND outlier = 0 ORDER BY depth",
            room_id,
        )
    ]
    assert bodies == [f"m{i}" for i in range(30)]
    # Backfilled history has negative stream orderings and is never an extremity.
    negatives = rows(
        db,
        "SELECT count(*) FROM events WHERE room_id = ? AND stream_ordering < 0",
        room_id,
    )[0][0]
    assert negatives >= 30
    assert await backfill.fill(room_id, 10) == 0  # whole: the create event is reached


async def test_messages_backfills_and_answers_what_it_has_when_the_server_is_down(
    joins: RemoteJoins,
    resident: Resident,
    client: FakeClient,
    writer: RoomWriter,
    keyring: FakeKeyring,
) -> None:
    room_id = await resident.room()
    await resident.say(room_id, *[f"m{i}" for i in range(12)])
    await joins.join(ALICE, room_id, [REMOTE], {})
    await writer.send_event(room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": "mine"})
    backfill = RemoteBackfill(
        PduPipeline(writer, keyring, client),  # type: ignore[arg-type]
        client,
        LOCAL,
    )
    room_client = RoomClient(writer, EventReader(writer.store), RateLimiter(RateLimit(1000, 1000)))
    history = History(room_client, backfill.fill)

    async def page(limit: int) -> list[object]:
        got = await history.messages(
            ALICE,
            room_id,
            from_pos=None,
            to_pos=None,
            forwards=False,
            limit=limit,
            flt=EventFilter(),
        )
        return [
            ev.pdu["content"].get("body") for ev in got.chunk if ev.pdu["type"] == "m.room.message"
        ]

    client.down.add(REMOTE)
    assert await page(5) == ["mine"]  # what we hold, no error
    client.down.clear()
    backfills = len([c for c in client.calls if c[1] == "backfill"])
    assert await page(5) == ["mine", "m11", "m10", "m9"]  # the join is one of the five
    assert len([c for c in client.calls if c[1] == "backfill"]) - backfills <= 2


async def test_one_backfill_reaches_the_create_event_without_state_ids(
    joins: RemoteJoins,
    resident: Resident,
    client: FakeClient,
    writer: RoomWriter,
    keyring: FakeKeyring,
) -> None:
    """A page of 11 just after joining a room of 10 messages: one ``/backfill`` of 100
    events (as Synapse asks, whatever the page size) brings the history down to the
    create event, each event's prev events in the same answer, so no ``/state_ids`` is
    needed, which this server does not serve (SyTest 50federation/34room-backfill.pl)."""
    room_id = await resident.room()
    await resident.say(room_id, *[f"m{i}" for i in range(10)])
    await joins.join(ALICE, room_id, [REMOTE], {})
    client.unserved.add("state_ids")
    backfill = RemoteBackfill(
        PduPipeline(writer, keyring, client),  # type: ignore[arg-type]
        client,
        LOCAL,
    )
    room_client = RoomClient(writer, EventReader(writer.store), RateLimiter(RateLimit(1000, 1000)))
    got = await History(room_client, backfill.fill).messages(
        ALICE, room_id, from_pos=None, to_pos=None, forwards=False, limit=11, flt=EventFilter()
    )
    types = [ev.pdu["type"] for ev in got.chunk]
    bodies = [ev.pdu["content"].get("body") for ev in got.chunk[1:]]
    assert types[0] == "m.room.member"
    assert bodies == [f"m{i}" for i in range(9, -1, -1)]
    assert [c[1] for c in client.calls].count("backfill") == 1
    assert "state_ids" not in [c[1] for c in client.calls]
