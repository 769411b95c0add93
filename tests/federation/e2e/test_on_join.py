"""A user of ours joining a room with servers new to them: those servers (and only
those) get the user's latest device list update; a profile change or a room with
known servers sends nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import nacl.signing
import trio

from pocketserver.federation.e2e.on_join import DeviceListsOnJoin
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.store import RoomStore
from tests.e2e_keys.keys import device_keys
from tests.rooms.conftest import RemoteServer

from .conftest import ALICE, BOB, LOCAL, RBOB, REMOTE, Env, until

OTHER = "other.test"
ROTHER = f"@olga:{OTHER}"
JOIN = {"membership": "join"}


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], list[str]]] = []

    async def send_device_list_update(
        self, content: Mapping[str, object], destinations: Sequence[str] | None = None
    ) -> None:
        await trio.lowlevel.checkpoint()
        assert destinations is not None
        self.sent.append((dict(content), list(destinations)))


async def test_joining_a_room_with_new_servers_sends_the_device_list(
    env: Env, nursery: trio.Nursery
) -> None:
    sk = nacl.signing.SigningKey.generate()
    await env.keys.upload(ALICE, "A1", {"device_keys": device_keys(ALICE, "A1", sk)})
    await env.keys.upload(ALICE, "A2", {"device_keys": device_keys(ALICE, "A2", sk)})
    recorder = Recorder()
    store: RoomStore = env.writer.store
    on_join = DeviceListsOnJoin(store, recorder, LOCAL)
    env.writer.add_listener(on_join.on_persisted)
    await nursery.start(on_join.run)

    # A room of bob's with a user of other.test and one of remote.test (which already
    # shares env.room_id with alice).
    room = await create_room(env.writer, BOB, RoomSettings(room_version="10", preset="public_chat"))
    other = RemoteServer(OTHER)
    for server, user in ((other, ROTHER), (env.remote, RBOB)):
        joined = await server.send(env.writer, room, user, "m.room.member", JOIN, user)
        assert joined.accepted
    await env.writer.send_event(room, ALICE, "m.room.member", JOIN, ALICE)
    await until(lambda: len(recorder.sent) == 1)
    content, destinations = recorder.sent[0]
    assert destinations == [OTHER]
    assert content["user_id"] == ALICE
    assert content["device_id"] == "A2"  # the latest change, its prev_id the one before
    assert len(content["prev_id"]) == 1
    assert "keys" in content

    # A profile change in that room, and a join to a room of known servers: nothing.
    await env.writer.send_event(
        room, ALICE, "m.room.member", {"membership": "join", "displayname": "A"}, ALICE
    )
    known = await create_room(
        env.writer, BOB, RoomSettings(room_version="10", preset="public_chat")
    )
    await env.remote.send(env.writer, known, RBOB, "m.room.member", JOIN, RBOB)
    await env.writer.send_event(known, ALICE, "m.room.member", JOIN, ALICE)
    for _ in range(30):
        await trio.sleep(0.01)
    assert len(recorder.sent) == 1
    assert REMOTE not in recorder.sent[0][1]


async def test_a_user_without_device_keys_sends_nothing_on_join(
    env: Env, nursery: trio.Nursery
) -> None:
    """No update for a user none of whose devices has keys (Synapse sends none on a
    join at all; SyTest 40devicelists "with correct prev_id" awaits the next update
    being the key upload's). Once a device has keys, the next join sends one."""
    recorder = Recorder()
    on_join = DeviceListsOnJoin(env.writer.store, recorder, LOCAL)
    env.writer.add_listener(on_join.on_persisted)
    await nursery.start(on_join.run)
    first = await create_room(
        env.writer, BOB, RoomSettings(room_version="10", preset="public_chat")
    )
    other = RemoteServer(OTHER)
    await other.send(env.writer, first, ROTHER, "m.room.member", JOIN, ROTHER)
    await env.writer.send_event(first, ALICE, "m.room.member", JOIN, ALICE)
    for _ in range(30):
        await trio.sleep(0.01)
    assert recorder.sent == []
    sk = nacl.signing.SigningKey.generate()
    await env.keys.upload(ALICE, "A1", {"device_keys": device_keys(ALICE, "A1", sk)})
    second = await create_room(
        env.writer, BOB, RoomSettings(room_version="10", preset="public_chat")
    )
    third = RemoteServer("third.test")
    await third.send(env.writer, second, "@t:third.test", "m.room.member", JOIN, "@t:third.test")
    await env.writer.send_event(second, ALICE, "m.room.member", JOIN, ALICE)
    await until(lambda: len(recorder.sent) == 1)
    assert recorder.sent[0][1] == ["third.test"]
    assert recorder.sent[0][0]["device_id"] == "A1"
