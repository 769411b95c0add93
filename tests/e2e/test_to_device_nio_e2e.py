"""Two matrix-nio clients with encryption start an interactive (SAS) key verification:
its messages travel as send-to-device events. Skipped without nio's ``e2e`` extra."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.harness import RunningServer

nio = pytest.importorskip("nio")
pytest.importorskip("vodozemac")

from tests.e2e.nio_crypto import encrypted_client, encrypted_room, sync_keys  # noqa: E402


async def _client(server: RunningServer, user_id: str, store: Path) -> nio.AsyncClient:
    return await encrypted_client(server, user_id, store, "nio verification")


async def _sync(client: nio.AsyncClient) -> nio.SyncResponse:
    return await sync_keys(client, claim=False)


async def _wait_for(client: nio.AsyncClient, kind: type) -> object:
    for _ in range(30):
        resp = await _sync(client)
        found = [e for e in resp.to_device_events if isinstance(e, kind)]
        if found:
            assert len(found) == 1, found
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {kind.__name__} arrived")


def test_sas_verification_messages_travel_to_device(
    server: RunningServer, new_user: str, tmp_path: Path
) -> None:
    alice_id = server.register(new_user + "va")["user_id"]
    bob_id = server.register(new_user + "vb")["user_id"]

    (tmp_path / "alice").mkdir()
    (tmp_path / "bob").mkdir()

    async def scenario() -> None:
        alice = await _client(server, alice_id, tmp_path / "alice")
        bob = await _client(server, bob_id, tmp_path / "bob")
        try:
            # A shared encrypted room makes each client track the other's device keys.
            await encrypted_room(alice, bob, claim=False)
            for _ in range(3):
                await _sync(alice)
                await _sync(bob)
            bob_device = alice.device_store[bob_id][bob.device_id]
            started = await alice.start_key_verification(bob_device)
            assert isinstance(started, nio.ToDeviceResponse), started
            start = await _wait_for(bob, nio.KeyVerificationStart)
            assert start.sender == alice_id
            accepted = await bob.accept_key_verification(start.transaction_id)
            assert isinstance(accepted, nio.ToDeviceResponse), accepted
            accept = await _wait_for(alice, nio.KeyVerificationAccept)
            assert accept.sender == bob_id
            assert accept.transaction_id == start.transaction_id
            # Delivered once: acknowledged by the next sync, never sent again.
            again = await _sync(bob)
            assert not [
                e for e in again.to_device_events if isinstance(e, nio.KeyVerificationStart)
            ]
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(scenario())
