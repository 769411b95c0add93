"""RoomClient.send: a transaction ID sends once, whatever happened since the first send."""

from __future__ import annotations

import pytest

from pocketserver.config.model import RateLimit
from pocketserver.errors import MatrixError
from pocketserver.ratelimit import RateLimiter
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database

from .conftest import ALICE, BOB, event_count
from .test_writer_local import MSG, make_room


def _client(writer: RoomWriter, store: RoomStore, burst: int = 100) -> RoomClient:
    limit = RateLimiter(RateLimit(per_second=0.001, burst_count=burst))
    return RoomClient(writer, EventReader(store), limit)


async def test_a_retry_returns_the_first_event(
    writer: RoomWriter, store: RoomStore, db: Database
) -> None:
    client = _client(writer, store)
    room_id = await make_room(writer)
    first = await client.send(ALICE, "DEV", room_id, "m.room.message", MSG, "t1")
    count = event_count(db)
    assert await client.send(ALICE, "DEV", room_id, "m.room.message", MSG, "t1") == first
    assert event_count(db) == count
    # Another device, or another transaction ID, sends a new event.
    assert await client.send(ALICE, "DEV2", room_id, "m.room.message", MSG, "t1") != first
    assert await client.send(ALICE, "DEV", room_id, "m.room.message", MSG, "t2") != first


async def test_a_retry_the_room_or_the_rate_limit_would_refuse_now(
    writer: RoomWriter, store: RoomStore, db: Database
) -> None:
    client = _client(writer, store, burst=2)
    room_id = await make_room(writer, join_rule="public")
    await writer.send_event(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
    first = await client.send(BOB, "DEV", room_id, "m.room.message", MSG, "t1")
    await writer.send_event(room_id, BOB, "m.room.member", {"membership": "leave"}, BOB)
    assert await client.send(BOB, "DEV", room_id, "m.room.message", MSG, "t1") == first
    with pytest.raises(MatrixError) as not_joined:
        await client.send(BOB, "DEV", room_id, "m.room.message", MSG, "t2")
    assert not_joined.value.status == 403

    a1 = await client.send(ALICE, "DEV", room_id, "m.room.message", MSG, "a1")
    await client.send(ALICE, "DEV", room_id, "m.room.message", MSG, "a2")
    with pytest.raises(MatrixError) as limited:
        await client.send(ALICE, "DEV", room_id, "m.room.message", MSG, "a3")
    assert limited.value.status == 429
    count = event_count(db)
    assert await client.send(ALICE, "DEV", room_id, "m.room.message", MSG, "a1") == a1
    assert event_count(db) == count


async def test_relations_a_client_may_not_send_are_refused_in_the_send_path(
    writer: RoomWriter, store: RoomStore, db: Database
) -> None:
    """The relation checks run in RoomClient.send itself (not only behind the HTTP
    route): a duplicate annotation and a thread from a related event are refused and
    write nothing; a retried transaction ID returns its event without a new check."""
    from pocketserver.rooms.relations import index_relation

    writer.add_txn_hook(index_relation)
    client = _client(writer, store)
    room_id = await make_room(writer)
    target = await client.send(ALICE, "DEV", room_id, "m.room.message", MSG, "m1")
    like = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "+1"}}
    first = await client.send(ALICE, "DEV", room_id, "m.reaction", like, "r1")
    count = event_count(db)
    with pytest.raises(MatrixError) as duplicate:
        await client.send(ALICE, "DEV", room_id, "m.reaction", like, "r2")
    assert (duplicate.value.status, duplicate.value.errcode) == (400, "M_DUPLICATE_ANNOTATION")
    assert await client.send(ALICE, "DEV", room_id, "m.reaction", like, "r1") == first
    thread = {**MSG, "m.relates_to": {"rel_type": "m.thread", "event_id": first}}
    with pytest.raises(MatrixError) as from_related:
        await client.send(ALICE, "DEV", room_id, "m.room.message", thread, "th1")
    assert (from_related.value.status, from_related.value.errcode) == (400, "M_UNKNOWN")
    assert event_count(db) == count
