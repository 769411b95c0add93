"""Shared steps for the matrix-nio tests with encryption (nio's ``e2e`` extra)."""

from __future__ import annotations

from pathlib import Path

import nio

from tests.harness import RunningServer


async def encrypted_client(
    server: RunningServer, user_id: str, store: Path, device_name: str = "nio"
) -> nio.AsyncClient:
    """Log in a nio client with encryption on and its crypto store in ``store``."""
    config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = nio.AsyncClient(server.base_url, user_id, store_path=str(store), config=config)
    resp = await client.login("correct horse", device_name=device_name)
    assert isinstance(resp, nio.LoginResponse), resp
    return client


async def sync_keys(client: nio.AsyncClient, *, claim: bool = True) -> nio.SyncResponse:
    """One sync, then the key uploads, queries (and claims) nio asks for."""
    resp = await client.sync(timeout=0, full_state=client.next_batch is None)
    assert isinstance(resp, nio.SyncResponse), resp
    if client.should_upload_keys:
        assert isinstance(await client.keys_upload(), nio.KeysUploadResponse)
    if client.should_query_keys:
        assert isinstance(await client.keys_query(), nio.KeysQueryResponse)
    if claim and client.should_claim_keys:
        users = client.get_users_for_key_claiming()
        assert isinstance(await client.keys_claim(users), nio.KeysClaimResponse)
    return resp


async def encrypted_room(
    creator: nio.AsyncClient, invitee: nio.AsyncClient, *, claim: bool = True
) -> str:
    """``creator`` makes a megolm-encrypted room and invites ``invitee``, who joins; both
    then sync (with key uploads and queries) so each tracks the other's devices."""
    await sync_keys(creator, claim=claim)
    await sync_keys(invitee, claim=claim)
    created = await creator.room_create(
        invite=[invitee.user_id],
        initial_state=[
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
        ],
    )
    assert isinstance(created, nio.RoomCreateResponse), created
    await sync_keys(invitee, claim=claim)
    assert isinstance(await invitee.join(created.room_id), nio.JoinResponse)
    await sync_keys(invitee, claim=claim)
    await sync_keys(creator, claim=claim)
    assert creator.rooms[created.room_id].encrypted
    return created.room_id
