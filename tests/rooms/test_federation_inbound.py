"""Inbound transactions (federation/inbound.py): idempotent answers, one transaction per
origin at a time, PDUs staged in SQLite before the answer and processed room by room,
gaps filled from the origin; refused input changes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import pytest
import trio
from nacl.signing import VerifyKey

from pocketserver.core.crypto import SignatureError
from pocketserver.core.event_signing import verify_event_signatures
from pocketserver.errors import MatrixError
from pocketserver.federation.history import FederationHistory
from pocketserver.federation.inbound import (
    MAX_PDUS,
    PduPipeline,
    StagedPduWorker,
    TransactionReceiver,
)
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database

from .conftest import ALICE, RBOB, REMOTE, RemoteServer, current_state, rows

JOIN = {"membership": "join"}
MSG = {"msgtype": "m.text", "body": "hi"}


class _Key:
    def __init__(self, key: VerifyKey) -> None:
        self._key = key

    def verify_key(self) -> VerifyKey:
        return self._key


class FakeKeyring:
    """The keyring's two calls the pipeline makes, over fixed keys."""

    def __init__(self, keys: Mapping[str, Mapping[str, VerifyKey]]) -> None:
        self.keys = keys

    async def verify_events(
        self, events: Sequence[tuple[Mapping[str, object], str]]
    ) -> list[SignatureError | None]:
        await trio.lowlevel.checkpoint()
        out: list[SignatureError | None] = []
        for pdu, version in events:
            try:
                verify_event_signatures(dict(pdu), version, self.keys)
            except SignatureError as e:
                out.append(e)
            else:
                out.append(None)
        return out

    async def known_keys(self, server: str) -> dict[str, _Key]:
        await trio.lowlevel.checkpoint()
        return {kid: _Key(k) for kid, k in self.keys.get(server, {}).items()}


class FakeOrigin:
    """The sending server's answers to what the pipeline asks."""

    def __init__(self) -> None:
        self.missing: list[dict[str, object]] = []
        self.calls: list[str] = []
        self.answers: dict[str, object] = {}
        """``GET`` answers by path (with ``?event_id=`` when the query has one)."""

    async def get_json(self, destination: str, path: str, **kwargs: Any) -> object:
        await trio.lowlevel.checkpoint()
        query = kwargs.get("query") or {}
        if "event_id" in query:
            path += "?event_id=" + str(query["event_id"])
        self.calls.append("GET " + path)
        return self.answers.get(path, {})

    async def post_json(self, destination: str, path: str, content: object, **kw: Any) -> object:
        await trio.lowlevel.checkpoint()
        self.calls.append("POST " + path)
        return {"events": self.missing}


class Env:
    def __init__(self, writer: RoomWriter, store: RoomStore, remote: RemoteServer) -> None:
        self.history = FederationHistory(store, EventReader(store))
        self.edus_seen: list[tuple[str, str, object]] = []
        self.gate: trio.Event | None = None
        self.contacts: list[str] = []
        self.origin = FakeOrigin()
        self.writer = writer
        self.store = store
        self.remote = remote
        self.receiver, self.worker = self.build()

    def build(self) -> tuple[TransactionReceiver, StagedPduWorker]:
        async def edu(origin: str, edu_type: str, content: object) -> bool:
            self.edus_seen.append((origin, edu_type, content))
            if self.gate is not None:
                await self.gate.wait()
            return True

        receiver = TransactionReceiver(
            self.store, self.history, [edu], on_contact=self.contacts.append
        )
        keyring = FakeKeyring(self.remote.keys_with(self.writer))
        pipeline = PduPipeline(self.writer, keyring, self.origin)  # type: ignore[arg-type]
        return receiver, StagedPduWorker(receiver, pipeline)


@pytest.fixture
def env(writer: RoomWriter, store: RoomStore, remote: RemoteServer) -> Env:
    return Env(writer, store, remote)


async def _room(env: Env, version: str = "10") -> str:
    room_id = await create_room(
        env.writer, ALICE, RoomSettings(room_version=version, preset="public_chat")
    )
    joined = await env.remote.send(env.writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    assert joined.accepted
    return room_id


def _staged(env: Env) -> int:
    return int(rows(env.store.db, "SELECT count(*) FROM federation_staged_pdus")[0][0])


async def _drain(env: Env) -> None:
    """Run the worker until nothing is staged (at most 10 s)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(env.worker.run)
        for _ in range(1000):
            if not _staged(env):
                break
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert _staged(env) == 0


async def test_a_transaction_is_staged_answered_and_processed(env: Env, db: Database) -> None:
    room_id = await _room(env)
    event_id, pdu = await env.remote.event(env.writer, room_id, RBOB, "m.room.message", MSG)
    body = {"origin": REMOTE, "pdus": [pdu], "edus": [{"edu_type": "m.typing", "content": {}}]}
    answer = await env.receiver.receive(REMOTE, "t1", body)
    assert answer == {"pdus": {event_id: {}}}
    assert env.contacts == [REMOTE]
    assert [e[1] for e in env.edus_seen] == ["m.typing"]
    # Staged before the answer: the PDU is on disk, not yet in the room.
    assert rows(db, "SELECT event_id FROM federation_staged_pdus") == [(event_id,)]
    assert rows(db, "SELECT count(*) FROM events WHERE event_id = ?", event_id) == [(0,)]
    # A retry of the same transaction: the same answer, nothing staged twice, EDUs not
    # applied twice.
    assert await env.receiver.receive(REMOTE, "t1", body) == answer
    assert len(rows(db, "SELECT * FROM federation_staged_pdus")) == 1
    assert len(env.edus_seen) == 1
    await _drain(env)
    assert rows(db, "SELECT count(*) FROM events WHERE event_id = ?", event_id) == [(1,)]
    assert env.worker.processed == 1


async def test_staged_pdus_survive_a_restart(env: Env, db: Database) -> None:
    room_id = await _room(env)
    event_id, pdu = await env.remote.event(env.writer, room_id, RBOB, "m.room.message", MSG)
    await env.receiver.receive(REMOTE, "t1", {"pdus": [pdu]})
    # "Restart": a new receiver and worker over the same database find the staged PDU.
    env.receiver, env.worker = env.build()
    await _drain(env)
    assert rows(db, "SELECT count(*) FROM events WHERE event_id = ?", event_id) == [(1,)]


async def test_one_transaction_per_origin_at_a_time(env: Env) -> None:
    env.gate = trio.Event()
    edu = {"edu_type": "m.typing", "content": {}}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(env.receiver.receive, REMOTE, "t1", {"edus": [edu]})
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(MatrixError) as caught:
            await env.receiver.receive(REMOTE, "t2", {"edus": [edu]})
        assert (caught.value.status, caught.value.errcode) == (429, "M_LIMIT_EXCEEDED")
        # An oversized transaction is refused for its size even now (as Synapse:
        # SyTest 51transactions "... break edu limits" expects the 400).
        with pytest.raises(MatrixError) as caught:
            await env.receiver.receive(REMOTE, "t3", {"edus": [edu] * 101})
        assert (caught.value.status, caught.value.errcode) == (400, "M_BAD_JSON")
        # Another origin is not held up.
        assert await env.receiver.receive("other.test", "t1", {}) == {"pdus": {}}
        env.gate.set()
    assert await env.receiver.receive(REMOTE, "t2", {"edus": [edu]}) == {"pdus": {}}


async def test_refused_pdus_change_nothing(env: Env, db: Database) -> None:
    room_id = await _room(env)
    await env.writer.send_event(
        room_id, ALICE, "m.room.server_acl", {"allow": ["*"], "deny": [REMOTE]}, ""
    )
    event_id, pdu = await env.remote.event(env.writer, room_id, RBOB, "m.room.message", MSG)
    unknown = {**pdu, "room_id": "!unknown:elsewhere.test"}
    answer = await env.receiver.receive(REMOTE, "t1", {"pdus": [pdu, unknown, "junk"]})
    assert answer["pdus"] == {event_id: {"error": "Server is banned from room"}}
    assert rows(db, "SELECT count(*) FROM federation_staged_pdus") == [(0,)]
    too_many = {"pdus": [pdu] * (MAX_PDUS + 1)}
    with pytest.raises(MatrixError) as caught:
        await env.receiver.receive(REMOTE, "t2", too_many)
    assert caught.value.status == 400
    with pytest.raises(MatrixError):
        await env.receiver.receive(REMOTE, "t3", {"pdus": "no"})
    assert rows(db, "SELECT count(*) FROM federation_staged_pdus") == [(0,)]


async def test_a_gap_is_filled_with_get_missing_events(env: Env, db: Database) -> None:
    room_id = await _room(env)
    first_id, first = await env.remote.event(env.writer, room_id, RBOB, "m.room.message", MSG)
    # The second event builds on the first, which we never received.
    second_id, second = await env.remote.event(
        env.writer, room_id, RBOB, "m.room.message", {**MSG, "body": "2"}, prev=[first_id]
    )
    env.origin.missing = [first]
    await env.receiver.receive(REMOTE, "t1", {"pdus": [second]})
    await _drain(env)
    assert any(
        c.startswith("POST /_matrix/federation/v1/get_missing_events/") for c in env.origin.calls
    )
    stored = rows(
        db,
        "SELECT event_id FROM events WHERE event_id IN (?, ?) ORDER BY stream_ordering",
        first_id,
        second_id,
    )
    assert stored == [(first_id,), (second_id,)]
    extremities = rows(db, "SELECT event_id FROM forward_extremities WHERE room_id = ?", room_id)
    assert extremities == [(second_id,)]
    assert ("m.room.member", RBOB) in current_state(db, room_id)


@pytest.mark.parametrize("version", ["1", "10"])
async def test_state_at_a_missing_prev_event_comes_from_state_ids(
    env: Env, db: Database, version: str
) -> None:
    """Q <- R <- S, only S sent; get_missing_events gives R; R's prev Q is still
    missing: the state after Q comes from ``/state_ids`` at Q plus Q itself (kept as
    an outlier), as Synapse asks it (SyTest 50federation/36state.pl)."""
    room_id = await _room(env, version)
    before = current_state(db, room_id)
    q_id, q = await env.remote.event(
        env.writer, room_id, RBOB, "m.room.member", {**JOIN, "displayname": "Q"}, RBOB
    )
    # R and S cite Q (their sender's member event) as an auth event, as SyTest's do.
    after_q = {**before, ("m.room.member", RBOB): q_id}
    r_id, r = await env.remote.event(
        env.writer, room_id, RBOB, "m.room.message", MSG, prev=[q_id], state=after_q
    )
    s_id, s = await env.remote.event(
        env.writer, room_id, RBOB, "m.room.message", MSG, prev=[r_id], state=after_q
    )
    env.origin.missing = [r]
    fed = "/_matrix/federation/v1"
    env.origin.answers[f"{fed}/state_ids/{quote(room_id, safe='')}?event_id={q_id}"] = {
        "pdu_ids": sorted(before.values()),
        "auth_chain_ids": [],
    }
    env.origin.answers[f"{fed}/event/{quote(q_id, safe='')}"] = {"pdus": [q]}
    await env.receiver.receive(REMOTE, "t1", {"pdus": [s]})
    await _drain(env)
    assert any("state_ids" in c and c.endswith(f"?event_id={q_id}") for c in env.origin.calls), (
        env.origin.calls
    )
    assert not any("event_auth" in c for c in env.origin.calls)  # prev events came first
    got = {
        eid: outlier
        for eid, outlier in rows(
            db, "SELECT event_id, outlier FROM events WHERE event_id IN (?, ?, ?)", q_id, r_id, s_id
        )
    }
    assert got == {q_id: 1, r_id: 0, s_id: 0}
    assert current_state(db, room_id)[("m.room.member", RBOB)] == q_id
    # No state is known at an outlier: /state_ids at Q is 404 (as Synapse).
    with pytest.raises(MatrixError) as refused:
        await env.history.state_ids(REMOTE, room_id, q_id)
    assert refused.value.status == 404


async def test_a_pdu_whose_prev_events_stay_missing_is_dropped(env: Env, db: Database) -> None:
    """The origin does not divulge the gap: the PDU is dropped without asking
    ``/state_ids`` at the missing event (as Synapse; SyTest 36state.pl)."""
    room_id = await _room(env)
    hidden_id, _ = await env.remote.event(env.writer, room_id, RBOB, "m.room.message", MSG)
    sent_id, sent = await env.remote.event(
        env.writer, room_id, RBOB, "m.room.message", MSG, prev=[hidden_id]
    )
    env.origin.missing = []
    await env.receiver.receive(REMOTE, "t1", {"pdus": [sent]})
    await _drain(env)
    assert any("get_missing_events" in c for c in env.origin.calls)
    assert not any("state_ids" in c for c in env.origin.calls)
    assert rows(db, "SELECT count(*) FROM events WHERE event_id IN (?, ?)", hidden_id, sent_id) == [
        (0,)
    ]


async def test_a_forged_pdu_is_dropped(env: Env, db: Database) -> None:
    room_id = await _room(env)
    event_id, pdu = await env.remote.event(env.writer, room_id, RBOB, "m.room.message", MSG)
    forged = {**pdu, "content": {"body": "changed after signing"}}
    forged["signatures"] = {REMOTE: {"ed25519:r_1": "A" * 86}}
    await env.receiver.receive(REMOTE, "t1", {"pdus": [forged]})
    await _drain(env)
    assert rows(db, "SELECT count(*) FROM events WHERE event_id = ?", event_id) == [(0,)]
    assert rows(db, "SELECT count(*) FROM federation_staged_pdus") == [(0,)]
