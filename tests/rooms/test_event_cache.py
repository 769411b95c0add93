"""The event cache keeps state events parsed and non-state events as compact JSON until
first read; reads through it give the same events as the database, in the order asked for."""

from __future__ import annotations

from pocketserver.rooms.store import RoomStore, _CompactEvent
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import events as event_store
from pocketserver.storage.db import Database

from .conftest import ALICE
from .test_writer_local import MSG, make_room


async def test_messages_cached_compact_state_parsed(
    writer: RoomWriter, store: RoomStore, db: Database
) -> None:
    room_id = await make_room(writer)
    sent = await writer.send_event(room_id, ALICE, "m.room.message", {**MSG, "body": "héllo ☃"})
    state_id = store._extremities.get(room_id)
    cached = store._events.get(sent.event_id)
    assert isinstance(cached, _CompactEvent)
    in_db = db.read_sync(event_store.get_event, sent.event_id)
    assert await store.get_event(sent.event_id) == in_db
    assert isinstance(store._events.get(sent.event_id), _CompactEvent)  # a writer-side read
    assert await store.get_events([sent.event_id], keep_parsed=True) == {sent.event_id: in_db}
    assert not isinstance(store._events.get(sent.event_id), _CompactEvent)
    assert await store.get_event(sent.event_id) == in_db
    assert state_id is not None
    current = await store.current_state_ids(room_id)
    create_id = current[("m.room.create", "")]
    assert not isinstance(store._events.get(create_id), _CompactEvent)


async def test_get_events_mixes_compact_parsed_and_missing_in_order(
    writer: RoomWriter, store: RoomStore, db: Database
) -> None:
    room_id = await make_room(writer)
    msgs = [
        (await writer.send_event(room_id, ALICE, "m.room.message", {**MSG, "n": i})).event_id
        for i in range(3)
    ]
    current = await store.current_state_ids(room_id)
    state = [current[("m.room.create", "")], current[("m.room.member", ALICE)]]
    store.forget_event(msgs[1])  # read from the database, then cached compact
    wanted = [msgs[0], state[0], msgs[1], msgs[2], state[1], "$unknown"]
    found = await store.get_events(wanted)
    in_db = db.read_sync(event_store.get_events, wanted)
    assert found == in_db
    assert list(found) == [e for e in wanted if e in in_db and e != msgs[1]] + [msgs[1]]
    assert all(isinstance(store._events.get(m), _CompactEvent) for m in msgs)
    # A message read for clients is kept parsed: later readers share it.
    for_clients = await store.get_events(wanted, keep_parsed=True)
    assert for_clients == in_db
    assert not any(isinstance(store._events.get(m), _CompactEvent) for m in msgs)
    again = await store.get_events([msgs[0], msgs[1]])
    assert again[msgs[0]].pdu is for_clients[msgs[0]].pdu


def test_compact_size_is_honest() -> None:
    from pocketserver.cache import estimate_size
    from pocketserver.rooms.store import _event_size

    text = '{"content":{"body":"hello"},"type":"m.room.message"}' * 10
    entry = _CompactEvent("$e", "!r:x", 10**9, text, 5, False, False, None, 10**6, 10**6)
    assert _event_size(entry) >= estimate_size(entry)
