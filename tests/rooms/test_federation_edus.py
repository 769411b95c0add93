"""Typing, receipts and presence from other servers (federation/edus.py): applied for
the origin's own users in rooms they are joined to; everything else changes nothing."""

from __future__ import annotations

import pytest

from pocketserver.ephemeral.presence import OFFLINE, ONLINE, PresenceService
from pocketserver.ephemeral.receipts import ReceiptService
from pocketserver.ephemeral.typing_notices import TypingService
from pocketserver.federation.edus import EphemeralEdus
from pocketserver.federation.history import FederationHistory
from pocketserver.ratelimit import RateLimit, RateLimiter
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import receipts as receipt_store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

from .conftest import ALICE, RBOB, RCAROL, REMOTE, RemoteServer, rows

JOIN = {"membership": "join"}
EVIL = "evil.test"


class Wall:
    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def parts(
    writer: RoomWriter, store: RoomStore, db: Database, notifier: Notifier, wall: Wall
) -> tuple[EphemeralEdus, RoomClient]:
    rooms = RoomClient(writer, EventReader(store), RateLimiter(RateLimit(1000, 1000)))
    typing = TypingService(rooms.require_joined, notifier)
    receipts = ReceiptService(rooms, notifier, 0)
    presence = PresenceService(db, notifier, now_ms=wall)
    history = FederationHistory(store, EventReader(store))
    return EphemeralEdus(typing, receipts, presence, history.check_acl), rooms


async def _room_with_rbob(writer: RoomWriter, remote: RemoteServer) -> str:
    room_id = await create_room(
        writer, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    joined = await remote.send(writer, room_id, RBOB, "m.room.member", JOIN, RBOB)
    assert joined.accepted
    return room_id


async def test_typing_from_the_users_own_server(
    parts: tuple[EphemeralEdus, RoomClient], writer: RoomWriter, remote: RemoteServer
) -> None:
    edus, _ = parts
    room_id = await _room_with_rbob(writer, remote)
    assert await edus.handle(
        REMOTE, "m.typing", {"room_id": room_id, "user_id": RBOB, "typing": True}
    )
    assert edus.typing.typers(room_id) == [RBOB]
    await edus.handle(REMOTE, "m.typing", {"room_id": room_id, "user_id": RBOB, "typing": False})
    assert edus.typing.typers(room_id) == []


@pytest.mark.parametrize(
    ("origin", "content"),
    [
        (EVIL, {"user_id": RBOB, "typing": True}),  # another server speaking for RBOB
        (REMOTE, {"user_id": RCAROL, "typing": True}),  # not joined
        (REMOTE, {"user_id": RBOB, "typing": "yes"}),  # malformed
        (REMOTE, {"user_id": "@local:local.test", "typing": True}),  # not theirs
    ],
)
async def test_typing_refused_changes_nothing(
    parts: tuple[EphemeralEdus, RoomClient],
    writer: RoomWriter,
    remote: RemoteServer,
    origin: str,
    content: dict[str, object],
) -> None:
    edus, _ = parts
    room_id = await _room_with_rbob(writer, remote)
    await edus.handle(origin, "m.typing", {**content, "room_id": room_id})
    assert edus.typing.typers(room_id) == []


async def test_typing_and_receipts_obey_the_acl(
    parts: tuple[EphemeralEdus, RoomClient], writer: RoomWriter, remote: RemoteServer, db: Database
) -> None:
    edus, _ = parts
    room_id = await _room_with_rbob(writer, remote)
    msg = await writer.send_event(
        room_id, ALICE, "m.room.message", {"body": "x", "msgtype": "m.text"}
    )
    await writer.send_event(
        room_id, ALICE, "m.room.server_acl", {"allow": ["*"], "deny": [REMOTE]}, ""
    )
    await edus.handle(REMOTE, "m.typing", {"room_id": room_id, "user_id": RBOB, "typing": True})
    assert edus.typing.typers(room_id) == []
    receipt = {room_id: {"m.read": {RBOB: {"event_ids": [msg.event_id], "data": {"ts": 1}}}}}
    await edus.handle(REMOTE, "m.receipt", receipt)
    assert rows(db, "SELECT count(*) FROM receipts")[0][0] == 0


async def test_receipts(
    parts: tuple[EphemeralEdus, RoomClient], writer: RoomWriter, remote: RemoteServer, db: Database
) -> None:
    edus, _ = parts
    room_id = await _room_with_rbob(writer, remote)
    msg = await writer.send_event(
        room_id, ALICE, "m.room.message", {"body": "x", "msgtype": "m.text"}
    )
    # Another server cannot place RBOB's receipt; an unknown event is skipped.
    forged = {room_id: {"m.read": {RBOB: {"event_ids": [msg.event_id], "data": {"ts": 1}}}}}
    await edus.handle(EVIL, "m.receipt", forged)
    assert rows(db, "SELECT count(*) FROM receipts")[0][0] == 0
    good = {
        room_id: {
            "m.read": {RBOB: {"event_ids": ["$unknown", msg.event_id], "data": {"ts": 1}}},
            "m.read.private": {RBOB: {"event_ids": [msg.event_id], "data": {}}},
        }
    }
    await edus.handle(REMOTE, "m.receipt", good)
    stored = rows(db, "SELECT user_id, receipt_type, event_id FROM receipts")
    assert stored == [(RBOB, "m.read", msg.event_id)]
    assert db.read_sync(receipt_store.stream_position) > 0


async def test_presence(parts: tuple[EphemeralEdus, RoomClient], wall: Wall) -> None:
    edus, _ = parts
    push = {
        "push": [
            {
                "user_id": RBOB,
                "presence": "online",
                "last_active_ago": 5000,
                "currently_active": True,
                "status_msg": "hi",
            }
        ]
    }
    await edus.handle(REMOTE, "m.presence", push)
    view = edus.presence.get(RBOB)
    assert (view.presence, view.currently_active, view.status_msg) == (ONLINE, True, "hi")
    assert view.last_active_ago == 5000
    # Another server cannot speak for RBOB.
    await edus.handle(EVIL, "m.presence", {"push": [{"user_id": RBOB, "presence": "offline"}]})
    assert edus.presence.get(RBOB).presence == ONLINE
    # Local activity does not touch a remote user's presence; silence makes them offline.
    edus.presence.bump_active(RBOB)
    assert edus.presence.get(RBOB).last_active_ago == 5000
    wall.now += 31 * 60 * 1000
    assert edus.presence.get(RBOB).presence == OFFLINE


async def test_presence_off_ignores_remote_presence(db: Database, notifier: Notifier) -> None:
    presence = PresenceService(db, notifier, enabled=False)

    async def allow(origin: str, room_id: str) -> None:
        return None

    edus = EphemeralEdus(None, None, presence, allow)  # type: ignore[arg-type]
    await edus.handle(REMOTE, "m.presence", {"push": [{"user_id": RBOB, "presence": "online"}]})
    assert presence.get(RBOB).presence == OFFLINE


async def test_unknown_and_malformed_edus(parts: tuple[EphemeralEdus, RoomClient]) -> None:
    edus, _ = parts
    assert not await edus.handle(REMOTE, "m.something", {})
    assert await edus.handle(REMOTE, "m.typing", "not an object")
    assert await edus.handle(REMOTE, "m.receipt", {"!r:x": "no"})
    assert await edus.handle(REMOTE, "m.presence", {"push": "no"})
