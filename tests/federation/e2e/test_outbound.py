"""Our users' device list changes as EDUs: stream IDs chained by prev_id, deletions,
signing key updates, nothing private or remote, a durable position; and a second
server in process that keeps its cache of our users by them, resyncing only once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio

from pocketserver.cache import MemoryBudget
from pocketserver.core.crypto import generate_signing_key
from pocketserver.e2e.cross_signing import CrossSigning
from pocketserver.e2e.stream import DeviceListStream
from pocketserver.federation.e2e import outbound
from pocketserver.federation.e2e.outbound import DeviceListPublisher
from pocketserver.federation.e2e.requests import user_devices_path
from pocketserver.federation.e2e.service import FederationE2e
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import remote_devices
from pocketserver.storage.db import Database
from pocketserver.storage.device_info import delete_devices
from pocketserver.streams.notifier import Notifier
from pocketserver.to_device.service import ToDeviceService
from tests.e2e_keys.keys import cross_signing_key, device_keys
from tests.rooms.conftest import RemoteServer

from .conftest import ALICE, LOCAL, RBOB, REMOTE, Env, FakeRemotes, add_user, until


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    async def send_device_list_update(self, content: Mapping[str, object]) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail:
            raise RuntimeError("sender down")
        self.sent.append(("m.device_list_update", dict(content)))

    async def send_signing_key_update(self, content: Mapping[str, object]) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail:
            raise RuntimeError("sender down")
        self.sent.append(("m.signing_key_update", dict(content)))


async def _publisher(
    env: Env, nursery: trio.Nursery, **kw: Any
) -> tuple[FakeSender, DeviceListPublisher]:
    sender = FakeSender()
    publisher = DeviceListPublisher(env.db, env.stream, sender, **kw)
    await nursery.start(publisher.run)
    return sender, publisher


async def test_device_changes_are_chained_by_prev_id(env: Env, nursery: trio.Nursery) -> None:
    sender, _ = await _publisher(env, nursery)
    sk = nacl.signing.SigningKey.generate()
    await env.keys.upload(ALICE, "A1", {"device_keys": device_keys(ALICE, "A1", sk)})
    await env.keys.upload(ALICE, "A2", {"device_keys": device_keys(ALICE, "A2", sk)})
    await until(lambda: len(sender.sent) == 2)
    (t1, first), (_, second) = sender.sent
    assert t1 == "m.device_list_update"
    assert (first["user_id"], first["device_id"], first["prev_id"]) == (ALICE, "A1", [])
    assert first["keys"]["device_id"] == "A1"
    assert "device_display_name" not in first
    assert (second["device_id"], second["prev_id"]) == ("A2", [first["stream_id"]])
    served = await env.fed.serving.user_devices(REMOTE, ALICE)
    assert served["stream_id"] == second["stream_id"]
    env.db.write_sync(delete_devices, ALICE, ["A2"])
    await env.stream.refresh()
    await until(lambda: len(sender.sent) == 3)
    third = sender.sent[2][1]
    assert (third["device_id"], third["deleted"], third["prev_id"]) == (
        "A2",
        True,
        [second["stream_id"]],
    )
    assert "keys" not in third


async def test_signing_keys_go_out_but_never_the_user_signing_key(
    env: Env, nursery: trio.Nursery
) -> None:
    sender, _ = await _publisher(env, nursery)
    msk, ssk, usk = (nacl.signing.SigningKey.generate() for _ in range(3))
    cs = CrossSigning(env.db, env.stream)
    await cs.upload_keys(
        ALICE,
        {
            "master_key": cross_signing_key(ALICE, "master", msk, None),
            "self_signing_key": cross_signing_key(ALICE, "self_signing", ssk, msk),
        },
    )
    await until(lambda: len(sender.sent) == 1)
    edu_type, content = sender.sent[0]
    assert edu_type == "m.signing_key_update"
    assert set(content) == {"user_id", "master_key", "self_signing_key"}
    await cs.upload_keys(
        ALICE, {"user_signing_key": cross_signing_key(ALICE, "user_signing", usk, msk)}
    )
    # A remote user's change we applied is not ours to send either.
    await env.fed.lists.track([RBOB])
    env.remotes.on(
        "GET", REMOTE, user_devices_path(RBOB), lambda _: env.remote_devices_answer(RBOB, 1, "D1")
    )
    await env.fed.lists.resync(RBOB)
    position = env.stream.position()
    await trio.sleep(0.1)
    assert len(sender.sent) == 1
    assert env.rows("SELECT position FROM federation_device_list_published") == [(position,)]


async def test_names_only_when_allowed(env: Env, nursery: trio.Nursery) -> None:
    sender, _ = await _publisher(env, nursery, display_names=True)
    await env.keys.upload(
        ALICE, "A1", {"device_keys": device_keys(ALICE, "A1", nacl.signing.SigningKey.generate())}
    )
    await until(lambda: len(sender.sent) == 1)
    assert sender.sent[0][1]["device_display_name"] == "Alice's phone"


async def test_position_survives_a_restart_and_a_failing_sender(
    env: Env, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbound, "RETRY_MIN_S", 0.05)
    sk = nacl.signing.SigningKey.generate()
    sender = FakeSender()
    async with trio.open_nursery() as first:
        await first.start(DeviceListPublisher(env.db, env.stream, sender).run)
        await env.keys.upload(ALICE, "A1", {"device_keys": device_keys(ALICE, "A1", sk)})
        await until(lambda: len(sender.sent) == 1)
        first.cancel_scope.cancel()
    sender.fail = True
    await env.keys.upload(ALICE, "A2", {"device_keys": device_keys(ALICE, "A2", sk)})
    second = DeviceListPublisher(env.db, env.stream, sender)
    await nursery.start(second.run)
    await trio.sleep(0.2)
    assert len(sender.sent) == 1
    sender.fail = False
    second.poke()
    await until(lambda: len(sender.sent) == 2)
    assert sender.sent[1][1]["device_id"] == "A2"
    await trio.sleep(0.1)
    assert len(sender.sent) == 2  # A1 was not sent again


async def test_a_second_server_keeps_its_cache_by_our_edus(
    env: Env, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """remote.test holds a room with Alice in it; it resyncs her list once from our
    /user/devices, then follows every change by our EDUs alone."""
    db = Database(tmp_path / "other.db", memory_bytes=8 << 20, synchronous="normal")
    try:
        db.write_sync(add_user, RBOB, ("B1", None))
        notifier = Notifier()
        writer = RoomWriter(
            RoomStore(db, MemoryBudget(16 << 20)), REMOTE, generate_signing_key("b_1"), notifier
        )
        room = await create_room(
            writer, RBOB, RoomSettings(room_version="10", preset="public_chat")
        )
        us = RemoteServer(LOCAL)
        await us.send(writer, room, ALICE, "m.room.member", {"membership": "join"}, ALICE)
        stream = await DeviceListStream.open(db, notifier)
        to_device = await ToDeviceService.open(db, notifier, REMOTE)
        client = FakeRemotes()

        async def serve_devices(_: object) -> Any:
            return await env.fed.serving.user_devices(REMOTE, ALICE)

        answers: list[Any] = []
        client.on("GET", LOCAL, user_devices_path(ALICE), lambda _: answers.pop())
        _, other = FederationE2e.build(db, stream, REMOTE, to_device, client)
        await nursery.start(other.run)

        class Relay:
            async def send_device_list_update(self, content: Mapping[str, object]) -> None:
                answers.append(await serve_devices(None))  # what a resync would see now
                await other.on_edu(LOCAL, "m.device_list_update", dict(content))

            async def send_signing_key_update(self, content: Mapping[str, object]) -> None:
                await other.on_edu(LOCAL, "m.signing_key_update", dict(content))

        publisher = DeviceListPublisher(env.db, env.stream, Relay())
        await nursery.start(publisher.run)
        sk = nacl.signing.SigningKey.generate()

        def cached() -> set[str]:
            return {d for d, dev in db.read_sync(remote_devices.devices, ALICE).items() if dev.keys}

        await env.keys.upload(ALICE, "A1", {"device_keys": device_keys(ALICE, "A1", sk)})
        await until(lambda: cached() == {"A1"})  # first update: no prev_id, a resync
        await env.keys.upload(ALICE, "A2", {"device_keys": device_keys(ALICE, "A2", sk)})
        await until(lambda: cached() == {"A1", "A2"})
        env.db.write_sync(delete_devices, ALICE, ["A1"])
        await env.stream.refresh()
        await until(lambda: set(db.read_sync(remote_devices.devices, ALICE)) == {"A2"})
        assert len(client.called("GET", "/_matrix/federation/v1/user/devices/")) == 1
    finally:
        db.close()
