"""What other servers may read of our rooms (federation/history.py): access (ACLs,
being in the room), history visibility for servers, and the DAG walks of /backfill and
/get_missing_events, on a real SQLite database through the real writer."""

from __future__ import annotations

from typing import Any

import pytest

from pocketserver.errors import MatrixError
from pocketserver.federation.history import MAX_BACKFILL, FederationHistory
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database

from .conftest import ALICE, RBOB, REMOTE, RemoteServer, state_before

MSG = {"msgtype": "m.text", "body": "hi"}
JOIN = {"membership": "join"}
OTHER = "other.test"


@pytest.fixture
def history(store: RoomStore) -> FederationHistory:
    return FederationHistory(store, EventReader(store))


async def _room(writer: RoomWriter, remote: RemoteServer, **kwargs: Any) -> str:
    """A local public room (version 10) that RBOB of ``remote`` joined."""
    room_id = await create_room(
        writer, ALICE, RoomSettings(room_version="10", preset="public_chat", **kwargs)
    )
    joined = await remote.send(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    assert joined.accepted, joined.rejected
    return room_id


async def _messages(writer: RoomWriter, room_id: str, n: int, prefix: str = "m") -> list[str]:
    ids = []
    for i in range(n):
        sent = await writer.send_event(
            room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": f"{prefix}{i}"}
        )
        ids.append(sent.event_id)
    return ids


def _bodies(pdus: list[dict[str, object]]) -> list[object]:
    return [p["content"].get("body") for p in pdus]  # type: ignore[attr-defined]


async def _refused(coro: Any, status: int) -> MatrixError:
    with pytest.raises(MatrixError) as caught:
        await coro
    assert caught.value.status == status, caught.value
    return caught.value


async def test_backfill_walks_back_newest_first(
    writer: RoomWriter, remote: RemoteServer, history: FederationHistory
) -> None:
    room_id = await _room(writer, remote)
    ids = await _messages(writer, room_id, 30)
    pdus = await history.backfill(REMOTE, room_id, [ids[-1]], 10)
    assert _bodies(pdus) == [f"m{i}" for i in range(29, 19, -1)]
    # From the oldest served event on, the next page continues without overlap.
    older = await history.backfill(REMOTE, room_id, [ids[20]], 5)
    assert _bodies(older) == ["m20", "m19", "m18", "m17", "m16"]
    # The walk reaches the room's creation and stops there.
    everything = await history.backfill(REMOTE, room_id, [ids[-1]], 1000)
    assert everything[-1]["type"] == "m.room.create"
    assert len({str(p["hashes"]) for p in everything}) == len(everything)  # no repeats
    assert len(everything) <= MAX_BACKFILL
    # Unknown seeds give nothing; a limit of 0 gives nothing.
    assert await history.backfill(REMOTE, room_id, ["$nope"], 10) == []
    assert await history.backfill(REMOTE, room_id, [ids[-1]], 0) == []


async def test_backfill_is_capped(
    writer: RoomWriter, remote: RemoteServer, history: FederationHistory
) -> None:
    room_id = await _room(writer, remote)
    ids = await _messages(writer, room_id, MAX_BACKFILL + 10)
    pdus = await history.backfill(REMOTE, room_id, [ids[-1]], 10_000)
    assert len(pdus) == MAX_BACKFILL


async def test_missing_events_between_earliest_and_latest(
    writer: RoomWriter, remote: RemoteServer, history: FederationHistory
) -> None:
    room_id = await _room(writer, remote)
    ids = await _messages(writer, room_id, 30)
    # Between m5 and m12: m6..m11, oldest first, neither end included.
    got = await history.missing_events(REMOTE, room_id, [ids[5]], [ids[12]], 10, 0)
    assert _bodies(got) == [f"m{i}" for i in range(6, 12)]
    # The limit takes the newest ones (the walk goes back from latest).
    got = await history.missing_events(REMOTE, room_id, [ids[5]], [ids[12]], 3, 0)
    assert _bodies(got) == ["m9", "m10", "m11"]
    # At most 20 however much is asked.
    got = await history.missing_events(REMOTE, room_id, [ids[0]], [ids[29]], 100, 0)
    assert len(got) == 20
    # min_depth stops the walk.
    depth_of_m10 = got[-1]["depth"] - 18  # got[-1] is m28
    got = await history.missing_events(REMOTE, room_id, [ids[0]], [ids[12]], 20, depth_of_m10)
    assert _bodies(got) == ["m10", "m11"]


async def test_a_server_without_users_in_the_room_is_refused(
    writer: RoomWriter, remote: RemoteServer, history: FederationHistory
) -> None:
    room_id = await _room(writer, remote)
    ids = await _messages(writer, room_id, 3)
    for call in (
        history.backfill(OTHER, room_id, [ids[-1]], 10),
        history.missing_events(OTHER, room_id, [], [ids[-1]], 10, 0),
        history.state_ids(OTHER, room_id, ids[-1]),
        history.event_auth(OTHER, room_id, ids[-1]),
        history.event(OTHER, ids[-1]),
    ):
        err = await _refused(call, 403)
        assert err.errcode == "M_FORBIDDEN"
    # An unknown room is 404, an unknown event too.
    await _refused(history.backfill(REMOTE, "!unknown:local.test", [ids[-1]], 10), 404)
    await _refused(history.event(REMOTE, "$unknown"), 404)
    await _refused(history.state_ids(REMOTE, room_id, "$unknown"), 404)
    # Once RBOB leaves, the remote server has no claim on the room either.
    left = await remote.send(writer, room_id, RBOB, "m.room.member", {"membership": "leave"}, RBOB)
    assert left.accepted
    await _refused(history.backfill(REMOTE, room_id, [ids[-1]], 10), 403)


async def test_server_acl_denies_even_a_joined_server(
    writer: RoomWriter, remote: RemoteServer, history: FederationHistory
) -> None:
    room_id = await _room(writer, remote)
    ids = await _messages(writer, room_id, 2)
    assert len(await history.backfill(REMOTE, room_id, [ids[-1]], 10)) > 0
    await writer.send_event(
        room_id, ALICE, "m.room.server_acl", {"allow": ["*"], "deny": ["remote.test"]}, ""
    )
    for call in (
        history.backfill(REMOTE, room_id, [ids[-1]], 10),
        history.state_ids(REMOTE, room_id, ids[-1]),
        history.timestamp_to_event(REMOTE, room_id, 0, True),
    ):
        err = await _refused(call, 403)
        assert err.errcode == "M_FORBIDDEN"
    # The port does not matter, nor does case.
    await _refused(history.backfill("REMOTE.test:8448", room_id, [ids[-1]], 10), 403)


async def test_joined_history_is_redacted_for_a_server_that_was_not_there(
    writer: RoomWriter, remote: RemoteServer, history: FederationHistory
) -> None:
    room_id = await create_room(
        writer, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    await writer.send_event(
        room_id, ALICE, "m.room.history_visibility", {"history_visibility": "joined"}, ""
    )
    before = await _messages(writer, room_id, 2, "secret")
    joined = await remote.send(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    assert joined.accepted
    after = await _messages(writer, room_id, 2, "open")
    pdus = await history.backfill(REMOTE, room_id, [after[-1]], 20)
    by_id = {p["hashes"]["sha256"]: p for p in pdus}  # type: ignore[index]
    assert len(by_id) == len(pdus)
    bodies = _bodies(pdus)
    assert bodies[:2] == ["open1", "open0"]
    assert "secret0" not in bodies
    assert "secret1" not in bodies
    # The secret messages are there, redacted: the DAG has no holes.
    assert sum(1 for p in pdus if p["type"] == "m.room.message" and p["content"] == {}) == 2
    single = await history.event(REMOTE, before[0])
    assert single["content"] == {}
    assert (await history.event(REMOTE, after[0]))["content"]["body"] == "open0"  # type: ignore[index]


async def test_shared_history_is_served_whole(
    writer: RoomWriter, remote: RemoteServer, history: FederationHistory
) -> None:
    room_id = await create_room(
        writer, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    before = await _messages(writer, room_id, 2, "early")
    await remote.send(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    single = await history.event(REMOTE, before[0])
    assert single["content"]["body"] == "early0"  # type: ignore[index]


async def test_state_ids_is_the_state_before_the_event(
    writer: RoomWriter, remote: RemoteServer, history: FederationHistory, db: Database
) -> None:
    room_id = await _room(writer, remote)
    topic = await writer.send_event(room_id, ALICE, "m.room.topic", {"topic": "t"}, "")
    answer = await history.state_ids(REMOTE, room_id, topic.event_id)
    assert set(answer.pdu_ids) == set(state_before(db, topic.event_id).values())
    assert topic.event_id not in answer.pdu_ids
    assert not set(answer.auth_chain_ids) & set(answer.pdu_ids)
    pdu_ids, chain_ids = await history.state_pdus(REMOTE, room_id, topic.event_id)
    assert pdu_ids == answer.pdu_ids
    assert chain_ids == answer.auth_chain_ids
    streamed = [p async for p in history.pdus_of(pdu_ids)]
    assert sorted(p["type"] for p in streamed) == sorted(  # type: ignore[type-var]
        k for k, _ in state_before(db, topic.event_id)
    )
    # Nothing for our own clients leaks into what servers get.
    assert all("transaction_id" not in p.get("unsigned", {}) for p in streamed)  # type: ignore[operator]
    chain = await history.event_auth(REMOTE, room_id, topic.event_id)
    auth_types = {p["type"] async for p in history.pdus_of(chain)}
    assert {"m.room.create", "m.room.power_levels", "m.room.member"} <= auth_types


async def test_timestamp_to_event(
    writer: RoomWriter, remote: RemoteServer, history: FederationHistory
) -> None:
    room_id = await _room(writer, remote)
    ids = await _messages(writer, room_id, 3)
    last = await history.event(REMOTE, ids[-1])
    ts = int(last["origin_server_ts"])  # type: ignore[call-overload]
    found, found_ts = await history.timestamp_to_event(REMOTE, room_id, ts + 10_000, False)
    assert found == ids[-1]
    assert found_ts == ts
    await _refused(history.timestamp_to_event(REMOTE, room_id, ts + 10_000, True), 404)
