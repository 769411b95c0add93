"""State groups: deltas on a previous group, a snapshot when the chain gets too long."""

from __future__ import annotations

import sqlite3

import pytest

from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import state as st
from pocketserver.storage.db import Database

from .conftest import ALICE, RBOB, RemoteServer, current_state, rows, state_after, state_before

ROOM = "!r:local.test"


def state_of(n: int, prefix: str = "$e") -> dict[tuple[str, str], str]:
    return {("m.room.member", f"@u{i}:x.test"): f"{prefix}{i}" for i in range(n)}


def write(db: Database, fn, *args):  # type: ignore[no-untyped-def]
    return db.write_sync(fn, *args)


def group_rows(db: Database, group: int) -> int:
    return int(rows(db, "SELECT count(*) FROM state_group_edits WHERE group_id = ?", group)[0][0])


def test_snapshot_and_delta_round_trip(db: Database):
    base = state_of(5)
    g0 = write(db, st.create_group, ROOM, base)
    assert db.read_sync(st.get_group_state, g0) == base
    assert db.read_sync(st.group_info, g0) == (0, 5)
    assert group_rows(db, g0) == 5
    changed = {**base, ("m.room.topic", ""): "$t1", ("m.room.member", "@u0:x.test"): "$new"}
    g1 = write(db, st.create_group, ROOM, changed, g0, base)
    assert db.read_sync(st.get_group_state, g1) == changed
    assert db.read_sync(st.group_info, g1) == (2, 6)
    assert group_rows(db, g1) == 2
    # Deletions are stored as NULL edits and applied when reading.
    smaller = {k: v for k, v in changed.items() if k != ("m.room.member", "@u1:x.test")}
    g2 = write(db, st.create_group, ROOM, smaller, g1, changed)
    assert db.read_sync(st.get_group_state, g2) == smaller
    assert rows(db, "SELECT state_key, event_id FROM state_group_edits WHERE group_id = ?", g2) == [
        ("@u1:x.test", None)
    ]
    # A key deleted and then set again.
    again = {**smaller, ("m.room.member", "@u1:x.test"): "$back"}
    g3 = write(db, st.create_group, ROOM, again, g2, smaller)
    assert db.read_sync(st.get_group_state, g3) == again
    # Earlier groups are unchanged.
    assert db.read_sync(st.get_group_state, g1) == changed
    assert db.read_sync(st.get_group_state, g0) == base


def test_empty_state_and_no_prev_state_make_snapshots(db: Database):
    g = write(db, st.create_group, ROOM, {})
    assert db.read_sync(st.get_group_state, g) == {}
    base = state_of(3)
    g0 = write(db, st.create_group, ROOM, base)
    g1 = write(db, st.create_group, ROOM, state_of(4), g0)  # no prev_state: a snapshot
    assert db.read_sync(st.group_info, g1) == (0, 4)
    assert db.read_sync(st.get_group_state, g1) == state_of(4)


def test_state_delta():
    old = {("a", ""): "$1", ("b", ""): "$2"}
    new = {("a", ""): "$1", ("b", ""): "$3", ("c", ""): "$4"}
    assert st.state_delta(old, new) == {("b", ""): "$3", ("c", ""): "$4"}
    assert st.state_delta(new, old) == {("b", ""): "$2", ("c", ""): None}
    assert st.state_delta(old, old) == {}


@pytest.mark.parametrize("size", [5, 250])
def test_a_snapshot_when_the_chain_would_exceed_the_bound(db: Database, size: int):
    bound = max(st.SNAPSHOT_MIN_CHAIN, size)
    state = state_of(size)
    group = write(db, st.create_group, ROOM, state)
    chains = []
    for i in range(bound + 5):
        new = {**state, ("m.room.topic", ""): f"$topic{i}"}
        group = write(db, st.create_group, ROOM, new, group, state)
        state = new
        chain, group_size = db.read_sync(st.group_info, group)
        assert group_size == len(state)
        assert chain <= max(st.SNAPSHOT_MIN_CHAIN, group_size)
        chains.append(chain)
    assert db.read_sync(st.get_group_state, group) == state
    # Deltas of one row until the bound, then a snapshot (chain 0), then deltas again.
    first_snapshot = chains.index(0)
    assert chains[:first_snapshot] == list(range(1, first_snapshot + 1))
    assert first_snapshot == max(st.SNAPSHOT_MIN_CHAIN, size + 1)
    assert chains[first_snapshot + 1] == 1


def test_a_big_delta_becomes_a_snapshot(db: Database):
    base = state_of(10)
    g0 = write(db, st.create_group, ROOM, base)
    big = state_of(150, prefix="$other")  # 150 changed entries > max(100, 150)? no: = 150
    g1 = write(db, st.create_group, ROOM, big, g0, base)
    assert db.read_sync(st.group_info, g1) == (150, 150)
    bigger = state_of(160, prefix="$third")
    g2 = write(db, st.create_group, ROOM, bigger, g1, big)
    assert db.read_sync(st.group_info, g2) == (0, 160)
    assert db.read_sync(st.get_group_state, g2) == bigger


def test_current_state_and_rooms_for_user(db: Database):
    def apply(conn: sqlite3.Connection) -> None:
        st.apply_current_state_delta(
            conn,
            ROOM,
            {("m.room.member", "@a:x.test"): "$j", ("m.room.topic", ""): "$t"},
            {"$j": "join"},
        )
        st.apply_current_state_delta(
            conn, "!other:x.test", {("m.room.member", "@a:x.test"): "$i"}, {"$i": "invite"}
        )

    write(db, apply)
    assert db.read_sync(st.rooms_for_user, "@a:x.test") == [ROOM]
    assert db.read_sync(st.rooms_for_user, "@a:x.test", "invite") == ["!other:x.test"]
    assert db.read_sync(st.get_current_state_event_id, ROOM, "m.room.topic", "") == "$t"
    write(db, st.apply_current_state_delta, ROOM, {("m.room.topic", ""): None}, {})
    assert db.read_sync(st.get_current_state_event_id, ROOM, "m.room.topic", "") is None
    assert db.read_sync(st.get_current_state_ids, ROOM) == {("m.room.member", "@a:x.test"): "$j"}


async def test_2000_membership_changes_stay_within_twice_the_minimum(
    writer: RoomWriter, db: Database
):
    room_id = await create_room(
        writer, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    initial = len(current_state(db, room_id))
    changes = 2000
    users = [f"@user{i}:local.test" for i in range(changes // 2)]
    last = ""
    for membership in ("join", "leave"):
        for user in users:
            ev = await writer.send_event(
                room_id, user, "m.room.member", {"membership": membership}, user
            )
            last = ev.event_id
    state_rows = db.read_sync(st.state_storage_rows, room_id)
    # Every state event of the room is a change, the creation's too.
    total_changes = initial + changes
    assert state_rows <= 2 * total_changes, (state_rows, total_changes)
    assert state_rows >= changes
    final = state_after(db, last)
    assert len(final) == initial + len(users)
    assert current_state(db, room_id) == final
    for group_id, chain, size in rows(
        db, "SELECT id, chain_length, size FROM state_groups WHERE room_id = ?", room_id
    ):
        assert chain <= max(st.SNAPSHOT_MIN_CHAIN, size), group_id


async def test_given_state_is_stored_as_a_delta_on_what_we_hold(
    writer: RoomWriter, db: Database, remote: RemoteServer
):
    """An event whose prev events we lack comes with its state (a join's send_join,
    a second join after a leave, /state_ids): that state is stored as a delta on the
    room's latest state group, not as another snapshot of every member."""
    room_id = await create_room(
        writer, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    for i in range(300):
        user = f"@u{i}:local.test"
        await writer.send_event(room_id, user, "m.room.member", {"membership": "join"}, user)
    joined = await remote.send(writer, room_id, RBOB, "m.room.member", {"membership": "join"}, RBOB)
    assert joined.accepted
    state = current_state(db, room_id)
    x_id, _ = await remote.event(writer, room_id, RBOB, "m.room.message", {"body": "x"})
    _, y_pdu = await remote.event(
        writer, room_id, RBOB, "m.room.message", {"body": "y"}, prev=[x_id], state=state
    )
    before = db.read_sync(st.state_storage_rows, room_id)
    y = await writer.receive_pdu(y_pdu, "10", remote.keys, state_before=state)
    assert y.accepted
    assert state_before(db, y.event_id) == state
    assert state_after(db, y.event_id) == state
    # No row: the state is the latest group's (a snapshot would be 300+ rows).
    assert db.read_sync(st.state_storage_rows, room_id) - before <= 1


async def test_the_state_after_the_newest_event_stays_cached(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    """When a big room's states fill the state cache, the one kept is the state after
    the newest event (the next event reads it), not the state before it: otherwise
    every join of a big room reads its state back from SQLite."""
    from pocketserver.cache import MemoryBudget
    from pocketserver.core.crypto import generate_signing_key
    from pocketserver.rooms.store import RoomStore
    from pocketserver.streams.notifier import Notifier

    store = RoomStore(db, MemoryBudget(400_000))  # the state cache holds one 300-state
    writer = RoomWriter(store, "local.test", generate_signing_key("t_1"), Notifier())
    room_id = await create_room(
        writer, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    reads = 0
    real = st.get_group_state

    def counting(conn: sqlite3.Connection, group_id: int) -> dict:
        nonlocal reads
        reads += 1
        return real(conn, group_id)

    monkeypatch.setattr(st, "get_group_state", counting)
    for i in range(300):
        user = f"@u{i}:local.test"
        await writer.send_event(room_id, user, "m.room.member", {"membership": "join"}, user)
    assert reads <= 5
