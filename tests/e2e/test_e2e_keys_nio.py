"""Two matrix-nio clients with encryption (vodozemac) in an encrypted room: they upload
keys, query and claim them, share a room key over to-device and read each other's
messages. Skipped where nio's ``e2e`` extra is not installed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.harness import RunningServer

nio = pytest.importorskip("nio")
pytest.importorskip("vodozemac")

from tests.e2e.nio_crypto import encrypted_client, encrypted_room, sync_keys  # noqa: E402


async def _client(server: RunningServer, user_id: str, store: Path) -> nio.AsyncClient:
    return await encrypted_client(server, user_id, store, "nio")


async def _sync(client: nio.AsyncClient) -> nio.SyncResponse:
    return await sync_keys(client, claim=True)


async def _texts(client: nio.AsyncClient, room_id: str, rounds: int = 10) -> list[str]:
    seen: list[str] = []
    for _ in range(rounds):
        resp = await _sync(client)
        room = resp.rooms.join.get(room_id)
        if room is not None:
            for event in room.timeline.events:
                assert not isinstance(event, nio.MegolmEvent), f"could not decrypt {event}"
                if isinstance(event, nio.RoomMessageText):
                    seen.append(event.body)
        if seen:
            return seen
        await asyncio.sleep(0.1)
    return seen


def test_two_nio_clients_talk_encrypted(
    server: RunningServer, new_user: str, tmp_path: Path
) -> None:
    alice_id = server.register(new_user + "a")["user_id"]
    bob_id = server.register(new_user + "b")["user_id"]

    async def scenario() -> None:
        (tmp_path / "alice").mkdir()
        (tmp_path / "bob").mkdir()
        alice = await _client(server, alice_id, tmp_path / "alice")
        bob = await _client(server, bob_id, tmp_path / "bob")
        try:
            room_id = await encrypted_room(alice, bob)
            sent = await alice.room_send(
                room_id,
                "m.room.message",
                {"msgtype": "m.text", "body": "hello bob"},
                ignore_unverified_devices=True,
            )
            assert isinstance(sent, nio.RoomSendResponse), sent
            assert await _texts(bob, room_id) == ["hello bob"]
            reply = await bob.room_send(
                room_id,
                "m.room.message",
                {"msgtype": "m.text", "body": "hello alice"},
                ignore_unverified_devices=True,
            )
            assert isinstance(reply, nio.RoomSendResponse), reply
            assert "hello alice" in await _texts(alice, room_id)
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(scenario())
