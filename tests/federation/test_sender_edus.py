"""EDUs through the federation sender: receipts and typing coalesced, presence only when
on, to-device and device-list updates durable, EDU limits per transaction."""

from __future__ import annotations

import trio

from pocketserver.federation.sender import edus as edu_mod
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import federation_sender as store
from pocketserver.storage.db import Database

from ..rooms.conftest import ALICE, REMOTE, RemoteServer
from .conftest import FakeFederation, SenderHarness, room_with, say, settle, until

RBOB = f"@bob:{REMOTE}"


def outbox(db: Database, destination: str) -> int:
    return db.read_sync(store.outbox_length, destination)


async def hold_a_transaction(writer: RoomWriter, room_id: str, fed: FakeFederation) -> trio.Event:
    """Put one transaction in flight and hold it; return the event that releases it."""
    fed.gate = gate = trio.Event()
    await say(writer, room_id, "holding")
    await until(lambda: fed.in_flight[REMOTE] == 1)
    return gate


async def test_receipts_keep_only_the_newest_per_room_user_and_type(
    harness: SenderHarness, writer: RoomWriter, remote: RemoteServer, fed: FakeFederation
) -> None:
    room_id = await room_with(writer, remote)
    sender = await harness.start()
    gate = await hold_a_transaction(writer, room_id, fed)
    for n in range(30):
        sender.send_receipt(room_id, "m.read", ALICE, [f"$e{n}"], {"ts": n})
    sender.send_receipt(room_id, "m.read", ALICE, ["$t1"], {"ts": 99, "thread_id": "$root"})
    sender.send_receipt(room_id, "m.read.private", ALICE, ["$private"], {"ts": 1})
    for n in range(5):
        sender.send_typing(room_id, ALICE, n % 2 == 0)
    await settle()
    assert sender.statistics().pending_edus == 3  # one receipt per thread, one typing
    gate.set()
    await until(lambda: len(fed.to(REMOTE)) == 2)
    await settle()
    assert len(fed.to(REMOTE)) == 2
    receipts = fed.to(REMOTE)[1].edus("m.receipt")
    # A user's receipts in two threads of a room need two EDUs.
    assert len(receipts) == 2
    assert receipts[0]["content"] == {
        room_id: {"m.read": {ALICE: {"event_ids": ["$e29"], "data": {"ts": 29}}}}
    }
    assert receipts[1]["content"][room_id]["m.read"][ALICE]["event_ids"] == ["$t1"]
    assert fed.to(REMOTE)[1].edus("m.typing") == [
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": ALICE, "typing": True}}
    ]
    assert "$private" not in str(fed.sent)


async def test_presence_goes_to_servers_sharing_a_room_and_nowhere_when_off(
    harness: SenderHarness, writer: RoomWriter, remote: RemoteServer, fed: FakeFederation
) -> None:
    await room_with(writer, remote)
    state = {"user_id": ALICE, "presence": "online", "last_active_ago": 0}
    off = await harness.start(presence_enabled=False)
    off.send_presence(state)
    await settle()
    assert fed.sent == []
    await harness.stop()
    on = await harness.start()
    on.send_presence(state)
    await until(lambda: len(fed.sent) == 1)
    assert fed.sent[0].edus() == [{"edu_type": "m.presence", "content": {"push": [state]}}]


async def test_presence_to_a_named_server_only(
    harness: SenderHarness, writer: RoomWriter, remote: RemoteServer, fed: FakeFederation
) -> None:
    """A server that just joined a room gets our members' presence, and only it."""
    other = RemoteServer("other.test")
    await room_with(writer, remote, other)
    sender = await harness.start()
    states = [
        {"user_id": ALICE, "presence": "online", "last_active_ago": 5},
        {"user_id": "@zoe:local.test", "presence": "unavailable", "last_active_ago": 9},
    ]
    sender.send_presence_to(REMOTE, states)
    sender.send_presence_to(REMOTE, [])  # nothing to say: nothing sent
    await until(lambda: len(fed.sent) == 1)
    await settle()
    assert [s.destination for s in fed.sent] == [REMOTE]
    assert fed.sent[0].edus() == [{"edu_type": "m.presence", "content": {"push": states}}]
    sender.send_presence(states[0], ["other.test"])
    await until(lambda: len(fed.sent) == 2)
    assert fed.sent[1].destination == "other.test"


async def test_to_device_messages_survive_a_restart(
    harness: SenderHarness,
    writer: RoomWriter,
    remote: RemoteServer,
    fed: FakeFederation,
    db: Database,
    clock,
) -> None:
    await room_with(writer, remote)
    await harness.start()
    fed.down.add(REMOTE)
    sender = harness.current.sender if harness.current else None
    assert sender is not None
    messages = {RBOB: {"DEV": {"body": "secret"}}, ALICE: {"X": {"body": "local: ignored"}}}
    await sender.send_to_device(ALICE, "m.room.encrypted", messages, "mid1")
    await until(lambda: fed.attempts[REMOTE] == 1)
    await settle()
    assert outbox(db, REMOTE) == 1  # not delivered: still stored
    await harness.stop()
    fed.down.discard(REMOTE)
    clock.ms += 600_000
    await harness.start()
    await until(lambda: len(fed.sent) == 1)
    assert fed.sent[0].edus() == [
        {
            "edu_type": "m.direct_to_device",
            "content": {
                "sender": ALICE,
                "type": "m.room.encrypted",
                "message_id": "mid1",
                "messages": {RBOB: {"DEV": {"body": "secret"}}},
            },
        }
    ]
    await until(lambda: outbox(db, REMOTE) == 0)


async def test_device_list_and_signing_key_updates(
    harness: SenderHarness,
    writer: RoomWriter,
    remote: RemoteServer,
    fed: FakeFederation,
    db: Database,
) -> None:
    await room_with(writer, remote)
    sender = await harness.start()
    update = {"user_id": ALICE, "device_id": "D1", "stream_id": 5, "prev_id": [4], "deleted": False}
    await sender.send_device_list_update(update)
    await until(lambda: len(fed.sent) == 1)
    assert fed.sent[0].edus() == [{"edu_type": "m.device_list_update", "content": update}]
    keys = {"user_id": ALICE, "master_key": {"user_id": ALICE, "usage": ["master"], "keys": {}}}
    await sender.send_signing_key_update(keys)
    await until(lambda: len(fed.sent) == 2)
    assert [e["edu_type"] for e in fed.sent[1].edus()] == [
        "m.signing_key_update",
        "org.matrix.signing_key_update",
    ]
    assert all(e["content"] == keys for e in fed.sent[1].edus())
    # A user sharing no room with anyone elsewhere: nothing to send.
    await sender.send_device_list_update({**update, "user_id": "@zoe:local.test"})
    await settle()
    assert len(fed.sent) == 2
    await until(lambda: outbox(db, REMOTE) == 0)


async def test_to_device_messages_leave_room_for_device_list_updates(
    harness: SenderHarness,
    writer: RoomWriter,
    remote: RemoteServer,
    fed: FakeFederation,
    db: Database,
) -> None:
    room_id = await room_with(writer, remote)
    sender = await harness.start()
    gate = await hold_a_transaction(writer, room_id, fed)
    for n in range(120):
        await sender.send_to_device(ALICE, "m.x", {RBOB: {"D": {"n": n}}}, f"m{n}")
    for n in range(20):
        await sender.send_device_list_update({"user_id": ALICE, "device_id": f"D{n}"})
    gate.set()
    await until(lambda: outbox(db, REMOTE) == 0)
    txns = fed.to(REMOTE)[1:]
    assert all(len(t.edus()) <= 100 for t in txns)
    first = txns[0]
    assert len(first.edus(edu_mod.DIRECT_TO_DEVICE)) == 90
    assert len(first.edus(edu_mod.DEVICE_LIST_UPDATE)) == 10
    sent = [e["content"]["message_id"] for t in txns for e in t.edus(edu_mod.DIRECT_TO_DEVICE)]
    assert sent == [f"m{n}" for n in range(120)]  # each once, in order
    assert sum(len(t.edus(edu_mod.DEVICE_LIST_UPDATE)) for t in txns) == 20


async def test_a_busy_intake_drops_volatile_edus_instead_of_blocking(
    harness: SenderHarness, writer: RoomWriter, remote: RemoteServer, fed: FakeFederation
) -> None:
    from pocketserver.federation.sender.service import INTAKE

    room_id = await room_with(writer, remote)
    sender = await harness.start()
    for n in range(INTAKE + 50):  # no checkpoint: nothing is handled meanwhile
        sender.send_typing(room_id, f"@u{n}:local.test", True)
    # (One more fits when the intake task is already waiting: it takes the first at once.)
    assert sender.statistics().dropped_edus in (49, 50)
    await until(lambda: sum(len(t.edus()) for t in fed.sent) >= 200)


async def test_the_receipt_service_listener_forwards_our_users_receipts(
    harness: SenderHarness, writer: RoomWriter, remote: RemoteServer, fed: FakeFederation
) -> None:
    from pocketserver.federation.sender.producers import receipt_forwarder

    room_id = await room_with(writer, remote)
    sender = await harness.start()
    forward = receipt_forwarder(sender, "local.test", now_ms=lambda: 1234)
    forward(RBOB, room_id, "m.read", "$theirs", None)  # a remote user's: not ours to send
    forward(ALICE, room_id, "m.read", "$ours", "$thread")
    await until(lambda: len(fed.sent) == 1)
    await settle()
    assert fed.sent[0].edus() == [
        {
            "edu_type": "m.receipt",
            "content": {
                room_id: {
                    "m.read": {
                        ALICE: {
                            "event_ids": ["$ours"],
                            "data": {"ts": 1234, "thread_id": "$thread"},
                        }
                    }
                }
            },
        }
    ]
