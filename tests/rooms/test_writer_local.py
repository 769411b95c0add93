"""The room writer with local events: create, send, auth, state, extremities, stream."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from pocketserver.core.crypto import compute_reference_hash, encode_canonical_json
from pocketserver.core.events import MAX_PDU_BYTES, compute_room_id_v12
from pocketserver.core.room_versions import get_room_version
from pocketserver.errors import MatrixError
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import events as event_store
from pocketserver.storage import state as state_store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

from .conftest import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CAROL,
    LOCAL,
    current_state,
    event_count,
    extremities,
    rows,
    state_after,
    state_before,
    stored,
)

MSG = {"msgtype": "m.text", "body": "hello"}


async def make_room(writer: RoomWriter, version: str = "10", join_rule: str = "invite") -> str:
    create = await writer.create_room(version, ALICE)
    room_id = create.room_id
    await writer.send_event(room_id, ALICE, "m.room.member", {"membership": "join"}, ALICE)
    pl = {
        "users": {} if get_room_version(version).hydra else {ALICE: 100},
        "state_default": 50,
        "events_default": 0,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
    }
    await writer.send_event(room_id, ALICE, "m.room.power_levels", pl, "")
    await writer.send_event(room_id, ALICE, "m.room.join_rules", {"join_rule": join_rule}, "")
    return room_id


# --- create --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
async def test_create_event_for_every_version(writer: RoomWriter, db: Database, version: str):
    create = await writer.create_room(version, ALICE)
    rv = get_room_version(version)
    pdu = create.pdu
    assert create.accepted
    assert create.stream_ordering > 0
    if rv.hydra:
        assert "room_id" not in pdu
        assert ":" not in create.room_id
        assert create.room_id == compute_room_id_v12(pdu)
        assert create.event_id == "$" + create.room_id[1:]
        assert "creator" not in pdu["content"]
    else:
        assert pdu["room_id"] == create.room_id
        assert create.room_id.endswith(":" + LOCAL)
    if rv.event_ids_in_pdu:
        assert pdu["event_id"] == create.event_id
        assert create.event_id.endswith(":" + LOCAL)
    else:
        assert "event_id" not in pdu
        ref = compute_reference_hash(pdu, version)
        if version == "3":
            assert create.event_id == "$" + ref
        else:
            assert create.event_id == "$" + ref.replace("+", "-").replace("/", "_")
    if not rv.implicit_room_creator:
        assert pdu["content"]["creator"] == ALICE
    assert pdu["content"]["room_version"] == version
    assert pdu["prev_events"] == []
    assert pdu["auth_events"] == []
    assert rows(
        db, "SELECT room_version, creator FROM rooms WHERE room_id = ?", create.room_id
    ) == [(version, ALICE)]
    key = ("m.room.create", "")
    assert current_state(db, create.room_id) == {key: create.event_id}
    assert state_after(db, create.event_id) == {key: create.event_id}
    assert state_before(db, create.event_id) == {}
    assert extremities(db, create.room_id) == {create.event_id}
    assert stored(db, create.event_id).depth == 1


@pytest.mark.parametrize("version", ALL_VERSIONS)
async def test_edges_have_the_versions_shape(writer: RoomWriter, db: Database, version: str):
    room_id = await make_room(writer, version)
    msg = await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    rv = get_room_version(version)
    prev = msg.pdu["prev_events"]
    auth = msg.pdu["auth_events"]
    assert isinstance(prev, list)
    assert isinstance(auth, list)
    assert len(prev) == 1
    if rv.event_ids_in_pdu:
        assert msg.pdu["event_id"] == msg.event_id
        for edge in prev + auth:
            assert isinstance(edge, list)
            assert len(edge) == 2
            target = stored(db, edge[0])
            assert edge[1] == {"sha256": compute_reference_hash(target.pdu, version)}
        assert prev[0][0] == state_after(db, msg.event_id)[("m.room.join_rules", "")]
    else:
        assert all(isinstance(e, str) for e in prev + auth)
    auth_ids = [e[0] if isinstance(e, list) else e for e in auth]
    create_id = state_after(db, msg.event_id)[("m.room.create", "")]
    if rv.hydra:
        assert create_id not in auth_ids
        assert len(auth_ids) == 2  # power levels, sender's membership
    else:
        assert create_id in auth_ids
        assert len(auth_ids) == 3


async def test_unsupported_room_version(writer: RoomWriter, db: Database):
    before = event_count(db)
    with pytest.raises(MatrixError) as info:
        await writer.create_room("13", ALICE)
    assert (info.value.status, info.value.errcode) == (400, "M_UNSUPPORTED_ROOM_VERSION")
    assert event_count(db) == before


async def test_unknown_room(writer: RoomWriter):
    with pytest.raises(MatrixError) as info:
        await writer.send_event("!nope:local.test", ALICE, "m.room.message", MSG)
    assert (info.value.status, info.value.errcode) == (404, "M_NOT_FOUND")


# --- authorisation -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_non_member_cannot_send_and_nothing_is_stored(
    writer: RoomWriter, db: Database, notifier: Notifier, version: str
):
    room_id = await make_room(writer, version)
    count, ext, pos = event_count(db), extremities(db, room_id), notifier.position
    cur = current_state(db, room_id)
    with pytest.raises(MatrixError) as info:
        await writer.send_event(room_id, BOB, "m.room.message", MSG)
    assert (info.value.status, info.value.errcode) == (403, "M_FORBIDDEN")
    with pytest.raises(MatrixError):
        await writer.send_event(room_id, BOB, "m.room.topic", {"topic": "x"}, "")
    assert event_count(db) == count
    assert extremities(db, room_id) == ext
    assert current_state(db, room_id) == cur
    assert notifier.position == pos


@pytest.mark.parametrize("version", ["2", "11", "12"])
async def test_invite_join_send_leave(writer: RoomWriter, db: Database, version: str):
    room_id = await make_room(writer, version)
    with pytest.raises(MatrixError):  # not invited yet
        await writer.send_event(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
    await writer.send_event(room_id, ALICE, "m.room.member", {"membership": "invite"}, BOB)
    member = rows(
        db,
        "SELECT membership FROM current_state WHERE room_id = ? AND state_key = ?",
        room_id,
        BOB,
    )
    assert member == [("invite",)]
    await writer.send_event(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
    sent = await writer.send_event(room_id, BOB, "m.room.message", MSG)
    assert sent.accepted
    assert db.read_sync(event_store.get_event, sent.event_id) is not None
    assert db.read_sync(state_store.rooms_for_user, BOB) == [room_id]
    await writer.send_event(room_id, BOB, "m.room.member", {"membership": "leave"}, BOB)
    count = event_count(db)
    with pytest.raises(MatrixError) as info:
        await writer.send_event(room_id, BOB, "m.room.message", MSG)
    assert info.value.errcode == "M_FORBIDDEN"
    assert event_count(db) == count


async def test_ban(writer: RoomWriter, db: Database):
    room_id = await make_room(writer, "10", join_rule="public")
    await writer.send_event(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
    await writer.send_event(room_id, CAROL, "m.room.member", {"membership": "join"}, CAROL)
    with pytest.raises(MatrixError):  # Carol (level 0) cannot ban
        await writer.send_event(room_id, CAROL, "m.room.member", {"membership": "ban"}, BOB)
    ban = await writer.send_event(room_id, ALICE, "m.room.member", {"membership": "ban"}, BOB)
    assert current_state(db, room_id)[("m.room.member", BOB)] == ban.event_id
    for attempt in (
        ("m.room.message", MSG, None),
        ("m.room.member", {"membership": "join"}, BOB),
    ):
        with pytest.raises(MatrixError) as info:
            await writer.send_event(room_id, BOB, attempt[0], attempt[1], attempt[2])
        assert info.value.errcode == "M_FORBIDDEN"


@pytest.mark.parametrize("version", ["3", "10", "11", "12"])
async def test_redaction_is_recorded(writer: RoomWriter, db: Database, version: str):
    room_id = await make_room(writer, version)
    msg = await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    red = await writer.send_event(
        room_id, ALICE, "m.room.redaction", {"reason": "oops"}, redacts=msg.event_id
    )
    if get_room_version(version).redacts_in_content:
        assert red.pdu["content"]["redacts"] == msg.event_id
        assert "redacts" not in red.pdu
    else:
        assert red.pdu["redacts"] == msg.event_id
    assert rows(db, "SELECT event_id, redacts FROM redactions") == [(red.event_id, msg.event_id)]
    assert db.read_sync(event_store.get_redactions_of, [msg.event_id]) == {
        msg.event_id: [red.event_id]
    }


async def test_too_large(writer: RoomWriter, db: Database, notifier: Notifier):
    room_id = await make_room(writer)
    count, pos = event_count(db), notifier.position
    with pytest.raises(MatrixError) as info:
        await writer.send_event(room_id, ALICE, "m.room.message", {"body": "x" * MAX_PDU_BYTES})
    assert (info.value.status, info.value.errcode) == (413, "M_TOO_LARGE")
    assert event_count(db) == count
    assert notifier.position == pos
    # Just under the limit is fine.
    probe = await writer.send_event(room_id, ALICE, "m.room.message", {"body": ""})
    size = len(encode_canonical_json(probe.pdu))
    ok = await writer.send_event(
        room_id, ALICE, "m.room.message", {"body": "y" * (MAX_PDU_BYTES - size - 100)}
    )
    assert len(encode_canonical_json(ok.pdu)) <= MAX_PDU_BYTES


async def test_too_large_keys(writer: RoomWriter, db: Database):
    room_id = await make_room(writer)
    count = event_count(db)
    for etype, state_key in (("m.room.topic", "k" * 256), ("x" * 256, "")):
        with pytest.raises(MatrixError) as info:
            await writer.send_event(room_id, ALICE, etype, {"topic": "t"}, state_key)
        assert (info.value.status, info.value.errcode) == (413, "M_TOO_LARGE")
    assert event_count(db) == count
    ok = await writer.send_event(room_id, ALICE, "m.room.topic", {"topic": "t"}, "é" * 127)
    assert ok.accepted


async def test_bad_json_content(writer: RoomWriter, db: Database):
    room_id = await make_room(writer)
    count = event_count(db)
    for content in ({"body": 1.5}, {"body": 2**60}):  # v10: no floats, integers in range
        with pytest.raises(MatrixError) as info:
            await writer.send_event(room_id, ALICE, "m.room.message", content)
        assert (info.value.status, info.value.errcode) == (400, "M_BAD_JSON")
    assert event_count(db) == count


# --- state, extremities, stream --------------------------------------------------------


async def test_state_extremities_and_stream_follow_each_event(
    writer: RoomWriter, db: Database, notifier: Notifier
):
    create = await writer.create_room("10", ALICE)
    room_id = create.room_id
    model: dict[tuple[str, str], str] = {("m.room.create", ""): create.event_id}
    last_stream = create.stream_ordering
    steps = [
        (ALICE, "m.room.member", {"membership": "join"}, ALICE),
        (ALICE, "m.room.power_levels", {"users": {ALICE: 100}}, ""),
        (ALICE, "m.room.join_rules", {"join_rule": "public"}, ""),
        (ALICE, "m.room.message", MSG, None),
        (BOB, "m.room.member", {"membership": "join"}, BOB),
        (BOB, "m.room.message", MSG, None),
        (ALICE, "m.room.topic", {"topic": "one"}, ""),
        (ALICE, "m.room.topic", {"topic": "two"}, ""),
        (BOB, "m.room.member", {"membership": "leave"}, BOB),
        (ALICE, "m.room.message", MSG, None),
    ]
    prev_id = create.event_id
    for sender, etype, content, state_key in steps:
        ev = await writer.send_event(room_id, sender, etype, content, state_key)
        assert ev.stream_ordering > last_stream
        last_stream = ev.stream_ordering
        assert notifier.position == ev.stream_ordering
        assert state_before(db, ev.event_id) == model
        row = stored(db, ev.event_id)
        if state_key is not None:
            model[(etype, state_key)] = ev.event_id
        else:
            assert row.state_after == row.state_before  # a message reuses the group
        assert state_after(db, ev.event_id) == model
        assert current_state(db, room_id) == model
        assert extremities(db, room_id) == {ev.event_id}
        assert ev.pdu["prev_events"] == [prev_id]
        prev_id = ev.event_id
    members = dict(
        rows(
            db,
            "SELECT state_key, membership FROM current_state WHERE room_id = ?"
            " AND type = 'm.room.member'",
            room_id,
        )
    )
    assert members == {ALICE: "join", BOB: "leave"}
    depths = [r[0] for r in rows(db, "SELECT depth FROM events ORDER BY stream_ordering")]
    assert depths == list(range(1, len(steps) + 2))


async def test_waiter_is_woken_with_the_new_position(writer: RoomWriter, notifier: Notifier):
    room_id = await make_room(writer)
    start = notifier.position
    got: list[int] = []

    async def waiter() -> None:
        got.append(await notifier.wait_past(start))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        ev = await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    assert got == [ev.stream_ordering]


async def test_concurrent_sends_to_two_rooms(writer: RoomWriter, db: Database):
    rooms = [await make_room(writer, "10"), await make_room(writer, "12")]
    per_task = 5
    tasks = 20
    sent: list[tuple[str, str]] = []

    async def sender(room_id: str, n: int) -> None:
        for i in range(per_task):
            ev = await writer.send_event(
                room_id, ALICE, "m.room.message", {"body": f"{n}-{i}", "msgtype": "m.text"}
            )
            sent.append((room_id, ev.event_id))

    async with trio.open_nursery() as nursery:
        for n in range(tasks):
            for room_id in rooms:
                nursery.start_soon(sender, room_id, n)
    assert len(sent) == 2 * tasks * per_task
    for room_id in rooms:
        ids = [e for r, e in sent if r == room_id]
        bodies = rows(
            db,
            "SELECT event_id, depth, json FROM events WHERE room_id = ? AND type = 'm.room.message'"
            " ORDER BY stream_ordering",
            room_id,
        )
        assert sorted(r[0] for r in bodies) == sorted(ids)
        chain = rows(
            db,
            "SELECT event_id, depth FROM events WHERE room_id = ? ORDER BY stream_ordering",
            room_id,
        )
        # Linear: each event's only prev is the event before it, depth one more.
        for (prev_id, prev_depth), (event_id, depth) in itertools.pairwise(chain):
            ev = stored(db, event_id)
            prevs = [p[0] if isinstance(p, list) else p for p in ev.pdu["prev_events"]]
            assert prevs == [prev_id]
            assert depth == prev_depth + 1
        assert extremities(db, room_id) == {chain[-1][0]}
    streams = [r[0] for r in rows(db, "SELECT stream_ordering FROM events")]
    assert len(streams) == len(set(streams))
    assert len(writer._locks) == 0
