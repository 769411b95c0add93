"""Partial-state joins in process (federation/partial_state.py, issue #11): our user
joins a room of a real resident (pocketserver's own resident side, which serves
``omit_members``) behind the fake federation client of test_remote_join.py; the room
is usable at once, events of members we do not know yet are accepted while it is
partial, and the resync ends with the resident's state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from pocketserver.federation.partial_state import PartialStateResync
from pocketserver.federation.remote_join import RemoteJoins
from pocketserver.rooms.writer import EventKind, RoomWriter
from pocketserver.storage.db import Database

from .conftest import ALICE, REMOTE, RemoteServer, current_state, rows, stored
from .test_federation_inbound import FakeKeyring
from .test_remote_join import JOIN, FakeClient, Resident

MEMBERS = 25


@pytest.fixture
def resident(tmp_path: Path, remote: RemoteServer, writer: RoomWriter) -> Iterator[Resident]:
    r = Resident(tmp_path / "resident.db", remote, writer)
    yield r
    r.db.close()


@pytest.fixture
def client(resident: Resident) -> FakeClient:
    return FakeClient(resident)


@pytest.fixture
async def resync(
    writer: RoomWriter, remote: RemoteServer, client: FakeClient
) -> AsyncIterator[PartialStateResync]:
    keyring = FakeKeyring(remote.keys_with(writer))
    service = PartialStateResync(writer, keyring, client, "local.test", retry_s=0.5)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        nursery.cancel_scope.cancel()


@pytest.fixture
def joins(
    writer: RoomWriter, remote: RemoteServer, client: FakeClient, resync: PartialStateResync
) -> RemoteJoins:
    keyring = FakeKeyring(remote.keys_with(writer))
    return RemoteJoins(writer, keyring, client, "local.test", writer._signing_key, resync)  # type: ignore[arg-type]


async def big_room(resident: Resident) -> str:
    room_id = await resident.room()
    for i in range(MEMBERS):
        user = f"@u{i}:{REMOTE}"
        await resident.writer.send_event(room_id, user, "m.room.member", JOIN, state_key=user)
    await resident.say(room_id, "hello")
    return room_id


def members(state: dict[tuple[str, str], str]) -> set[str]:
    return {k for t, k in state if t == "m.room.member"}


async def test_partial_join_then_resync_to_the_residents_state(
    joins: RemoteJoins,
    resync: PartialStateResync,
    resident: Resident,
    client: FakeClient,
    writer: RoomWriter,
    remote: RemoteServer,
    db: Database,
) -> None:
    room_id = await big_room(resident)
    client.state_gate = trio.Event()  # hold the resync
    persisted = await joins.join(ALICE, room_id, [REMOTE], {})
    assert client.queries[-1] == {"omit_members": "true"}
    assert persisted.accepted
    assert resync.is_partial(room_id)
    assert rows(db, "SELECT room_id FROM partial_state_rooms") == [(room_id,)]
    partial = current_state(db, room_id)
    assert f"@u20:{REMOTE}" not in members(partial)  # not a hero either
    assert ("m.room.power_levels", "") in partial

    # Usable at once: our own message builds on the partial state.
    sent = await writer.send_event(room_id, ALICE, "m.room.message", {"body": "hi"})
    assert sent.accepted

    # An event of a member we do not know yet: authorised with its own auth events
    # (its sender's join, fetched as an outlier as the inbound pipeline would),
    # neither rejected nor soft-failed.
    u3 = f"@u20:{REMOTE}"
    await resident.writer.send_event(room_id, u3, "m.room.message", {"body": "from u3"})
    rstate = current_state(resident.db, room_id)
    last = rows(
        resident.db,
        "SELECT event_id FROM events WHERE room_id = ? ORDER BY stream_ordering DESC LIMIT 1",
        room_id,
    )[0][0]
    message = stored(resident.db, last).pdu
    keys = remote.keys_with(writer)
    await writer.receive_batch(
        room_id, "10", [stored(resident.db, rstate[("m.room.member", u3)]).pdu], keys
    )
    got = await writer.receive_pdu(message, "10", keys, kind=EventKind.NEW)
    assert got.accepted
    assert not got.soft_failed
    assert got.live

    # /members waits for the resync; it ends with the resident's state.
    async with trio.open_nursery() as nursery:
        waited: list[bool] = []

        async def wait() -> None:
            waited.append(await resync.wait_full_state(room_id, 10))

        nursery.start_soon(wait)
        await trio.sleep(0.1)
        assert not waited
        client.state_gate.set()
    assert waited == [True]
    assert not resync.is_partial(room_id)
    assert current_state(db, room_id) == current_state(resident.db, room_id)
    assert rows(db, "SELECT count(*) FROM partial_state_rooms") == [(0,)]
    # The state groups were completed too: the state after our message has everyone.
    after = writer.store
    ev = await after.get_event(sent.event_id)
    assert ev is not None
    assert members(await after.group_state(ev.state_after)) == members(
        current_state(resident.db, room_id)
    )


async def test_a_resident_that_ignores_omit_members_gives_a_full_join(
    joins: RemoteJoins,
    resync: PartialStateResync,
    resident: Resident,
    client: FakeClient,
    db: Database,
) -> None:
    room_id = await big_room(resident)
    client.ignore_omit = True
    persisted = await joins.join(ALICE, room_id, [REMOTE], {})
    assert persisted.accepted
    assert not resync.is_partial(room_id)
    assert rows(db, "SELECT count(*) FROM partial_state_rooms") == [(0,)]
    assert current_state(db, room_id) == current_state(resident.db, room_id)


async def test_the_resync_tries_another_server_and_again_later(
    joins: RemoteJoins,
    resync: PartialStateResync,
    resident: Resident,
    client: FakeClient,
    db: Database,
) -> None:
    """The resident is unreachable once the join is done: the resync fails with every
    server, stays partial, and completes on a later round when it is back."""
    room_id = await big_room(resident)
    client.state_gate = trio.Event()
    await joins.join(ALICE, room_id, [REMOTE], {})
    client.down.add(REMOTE)
    client.state_gate.set()
    await trio.sleep(0.2)
    assert resync.is_partial(room_id)
    client.down.clear()
    assert await resync.wait_full_state(room_id, 10)
    assert current_state(db, room_id) == current_state(resident.db, room_id)
