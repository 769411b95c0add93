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
