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
