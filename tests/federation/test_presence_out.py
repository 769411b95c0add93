"""Our users' presence to other servers: on every change (to the servers sharing a
room), and on joins (a server new to a room gets our members' presence; our joining
user's presence goes to the servers in the room), as Synapse's presence handler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
import trio

from pocketserver.ephemeral.presence import PresenceService
from pocketserver.federation.presence_out import PresenceOut
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

from ..rooms.conftest import ALICE, BOB, CAROL, LOCAL, REMOTE, RemoteServer
from .conftest import JOIN, room_with, settle


@dataclass
class RecordingSender:
    """Records what would go to the federation sender."""

    to_sharing: list[tuple[dict[str, object], list[str] | None]] = field(default_factory=list)
    to_one: list[tuple[str, list[dict[str, object]]]] = field(default_factory=list)

    def send_presence(
        self, state: Mapping[str, object], destinations: Sequence[str] | None = None
    ) -> None:
        self.to_sharing.append((dict(state), None if destinations is None else list(destinations)))

    def send_presence_to(self, destination: str, states: Sequence[Mapping[str, object]]) -> None:
        self.to_one.append((destination, [dict(s) for s in states]))


class Wall:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@dataclass
class Rig:
    presence: PresenceService
    out: PresenceOut
    sender: RecordingSender
    wall: Wall


@pytest.fixture
async def rig(db: Database, store: RoomStore, writer: RoomWriter) -> AsyncIterator[Rig]:
    wall = Wall()
    presence = PresenceService(db, Notifier(), now_ms=wall)
    sender = RecordingSender()
    out = PresenceOut(presence, store, sender, LOCAL)
    presence.add_listener(out.on_presence)
    writer.add_listener(out.on_persisted)
    async with trio.open_nursery() as nursery:
        await nursery.start(out.run)
        yield Rig(presence, out, sender, wall)
        nursery.cancel_scope.cancel()


async def test_a_server_new_to_the_room_gets_our_members_presence(
    rig: Rig, writer: RoomWriter, remote: RemoteServer
) -> None:
    rig.presence.set_state(ALICE, "online", "at the Pi")
    rig.sender.to_sharing.clear()
    room_id = await room_with(writer)
    # BOB joined but never did anything (offline by default: not worth a byte);
    # CAROL is offline with a status message (sent, as Synapse does).
    await writer.send_event(room_id, BOB, "m.room.member", JOIN, BOB)
    rig.presence.set_state(CAROL, "offline", "on holiday")
    await writer.send_event(room_id, CAROL, "m.room.member", JOIN, CAROL)
    await settle()
    assert rig.sender.to_one == []  # no other server in the room yet
    rig.sender.to_sharing.clear()

    rbob = f"@bob:{REMOTE}"
    await remote.send(writer, room_id, rbob, "m.room.member", JOIN, rbob)
    await settle()
    assert len(rig.sender.to_one) == 1
    destination, states = rig.sender.to_one[0]
    assert destination == REMOTE
    assert {s["user_id"]: s["presence"] for s in states} == {
        ALICE: "online",
        CAROL: "offline",
    }
    alice = next(s for s in states if s["user_id"] == ALICE)
    assert alice["status_msg"] == "at the Pi"
    assert "last_active_ago" in alice

    # A second user of a server already in the room: it knows our users' presence.
    rcarol = f"@carol:{REMOTE}"
    await remote.send(writer, room_id, rcarol, "m.room.member", JOIN, rcarol)
    # A profile change of the remote member is no join either.
    await remote.send(writer, room_id, rbob, "m.room.member", {**JOIN, "displayname": "Rob"}, rbob)
    await settle()
    assert len(rig.sender.to_one) == 1
    assert rig.sender.to_sharing == []


async def test_our_joining_user_is_announced_to_the_servers_in_the_room(
    rig: Rig, writer: RoomWriter, remote: RemoteServer
) -> None:
    room_id = await room_with(writer, remote)
    rig.presence.set_state(BOB, "unavailable", None)
    rig.sender.to_sharing.clear()
    await writer.send_event(room_id, BOB, "m.room.member", JOIN, BOB)
    await settle()
    assert rig.sender.to_sharing == [
        (
            {"user_id": BOB, "presence": "unavailable", "last_active_ago": 0},
            [REMOTE],
        )
    ]
    # A profile change is not a join.
    await writer.send_event(room_id, BOB, "m.room.member", {**JOIN, "displayname": "B"}, BOB)
    await settle()
    assert len(rig.sender.to_sharing) == 1


async def test_our_user_joining_a_partial_state_room_is_announced_to_its_servers(
    rig: Rig, writer: RoomWriter, store: RoomStore
) -> None:
    """A room joined with partial state knows few members: the servers the resident
    named (``servers_in_room``) hear of our joining user too."""
    room_id = await room_with(writer)
    store.partial_rooms[room_id] = (REMOTE, "other.example", LOCAL)
    rig.presence.set_state(BOB, "online", None)
    rig.sender.to_sharing.clear()
    await writer.send_event(room_id, BOB, "m.room.member", JOIN, BOB)
    await settle()
    assert len(rig.sender.to_sharing) == 1
    state, destinations = rig.sender.to_sharing[0]
    assert state["user_id"] == BOB
    assert destinations == sorted([REMOTE, "other.example"])


async def test_changes_go_out_for_our_users_only(rig: Rig) -> None:
    rig.presence.set_state(ALICE, "online", None)
    rig.presence.set_remote(f"@rob:{REMOTE}", "online", None, 0, True)
    assert [s["user_id"] for s, _ in rig.sender.to_sharing] == [ALICE]
    assert rig.sender.to_sharing[0][1] is None  # the sender finds the servers


async def test_nothing_when_presence_is_off(
    db: Database, store: RoomStore, writer: RoomWriter, remote: RemoteServer
) -> None:
    presence = PresenceService(db, Notifier(), enabled=False)
    sender = RecordingSender()
    out = PresenceOut(presence, store, sender, LOCAL)
    presence.add_listener(out.on_presence)
    writer.add_listener(out.on_persisted)
    async with trio.open_nursery() as nursery:
        await nursery.start(out.run)
        presence.set_state(ALICE, "online", None)
        await room_with(writer, remote)
        await settle()
        nursery.cancel_scope.cancel()
    assert sender.to_sharing == []
    assert sender.to_one == []
