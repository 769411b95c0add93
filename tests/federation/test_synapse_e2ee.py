"""Interop with a real Synapse: an end-to-end encrypted conversation between a
matrix-nio client on pocketserver and a matrix-nio client on Synapse (vodozemac).

Both clients log in and upload device and one-time keys to their own server. One
creates a megolm-encrypted room and invites the other, who joins across servers. Then
each client queries the other's device keys (``/keys/query`` to its own server, which
asks the other over federation: ``/user/keys/query``), claims a one-time key
(``/keys/claim`` -> ``/user/keys/claim``), shares its megolm session by to-device
(``m.direct_to_device`` EDUs over ``PUT /send``) and sends an encrypted message; the
other decrypts it. Both directions of room ownership. Last, a device logged in on one
side reaches the other side's ``/sync`` ``device_lists.changed`` and ``/keys/changes``
(``m.device_list_update`` EDUs), and a key query then finds the new device; a
device renamed on Synapse reaches pocketserver's ``device_lists.changed`` too.
Skipped where nio's ``e2e`` extra is not installed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.federation.conftest import pocket_tls_config
from tests.federation.synapse_peer import SynapsePeer, TestCA, trusting
from tests.harness import RunningServer, running_server

nio = pytest.importorskip("nio")
pytest.importorskip("vodozemac")

WAIT_S = 60.0
MEGOLM = {"algorithm": "m.megolm.v1.aes-sha2"}


@pytest.fixture(scope="module")
def pocket(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    config = pocket_tls_config(tmp_path_factory.mktemp("pocket"), test_ca)
    with running_server(config) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


async def _login(
    base_url: str, user_id: str, store: Path, ssl: Any = None, device: str = "nio"
) -> Any:
    config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = nio.AsyncClient(base_url, user_id, store_path=str(store), config=config, ssl=ssl)
    resp = await client.login("correct horse", device_name=device)
    assert isinstance(resp, nio.LoginResponse), resp
    return client


async def _sync(client: Any) -> Any:
    """One sync, then the key uploads, queries and claims nio asks for."""
    resp = await client.sync(timeout=500, full_state=client.next_batch is None)
    assert isinstance(resp, nio.SyncResponse), resp
    if client.should_upload_keys:
        assert isinstance(await client.keys_upload(), nio.KeysUploadResponse)
    if client.should_query_keys:
        queried = await client.keys_query()
        assert isinstance(queried, nio.KeysQueryResponse), queried
        assert not queried.failures, queried.failures
    if client.should_claim_keys:
        users = client.get_users_for_key_claiming()
        claimed = await client.keys_claim(users)
        assert isinstance(claimed, nio.KeysClaimResponse), claimed
        assert not claimed.failures, claimed.failures
    return resp


async def _until(client: Any, found: Callable[[Any], bool], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        resp = await _sync(client)
        if found(resp):
            return resp
    raise AssertionError(f"{client.user_id} did not see {what} within {WAIT_S}s")


async def _knows_device(client: Any, user_id: str, device_id: str) -> None:
    """Sync (and query keys) until ``client`` holds the device keys of ``device_id``."""
    await _until(
        client,
        lambda _: any(d.id == device_id for d in client.device_store.active_user_devices(user_id)),
        f"the keys of {user_id}'s device {device_id}",
    )


async def _say(client: Any, room_id: str, body: str) -> None:
    sent = await client.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": body},
        ignore_unverified_devices=True,
    )
    assert isinstance(sent, nio.RoomSendResponse), sent


async def _read(client: Any, room_id: str, body: str) -> None:
    """Sync until ``client`` decrypted ``body`` in the room; a message it cannot
    decrypt fails the test."""

    def found(resp: Any) -> bool:
        room = resp.rooms.join.get(room_id)
        if room is None:
            return False
        for event in room.timeline.events:
            assert not isinstance(event, nio.MegolmEvent), f"could not decrypt {event}"
            if isinstance(event, nio.RoomMessageText) and event.body == body:
                assert event.decrypted, event
                return True
        return False

    await _until(client, found, f"the encrypted message {body!r}")


async def _conversation(owner: Any, guest: Any, first: str, reply: str) -> str:
    """``owner`` makes an encrypted room and invites ``guest`` (on the other server),
    who joins; each sends one encrypted message and reads the other's."""
    created = await owner.room_create(
        invite=[guest.user_id],
        initial_state=[{"type": "m.room.encryption", "state_key": "", "content": MEGOLM}],
    )
    assert isinstance(created, nio.RoomCreateResponse), created
    room_id = created.room_id
    await _until(guest, lambda r: room_id in r.rooms.invite, "the invite")
    joined = await guest.join(room_id)
    assert isinstance(joined, nio.JoinResponse), joined
    await _until(
        owner,
        lambda _: guest.user_id in owner.rooms[room_id].users,
        "the guest's join",
    )
    await _until(guest, lambda _: guest.rooms[room_id].encrypted, "the encrypted room")
    # Each tracks the other's device (a remote key query through its own server).
    await _knows_device(owner, guest.user_id, guest.device_id)
    await _knows_device(guest, owner.user_id, owner.device_id)

    await _say(owner, room_id, first)
    await _read(guest, room_id, first)
    await _say(guest, room_id, reply)
    await _read(owner, room_id, reply)
    return str(room_id)


def _changed(base_url: str, token: str, since: str, user_id: str, ssl: Any) -> tuple[bool, bool]:
    """(``user_id`` in the /sync device_lists.changed since ``since``, in /keys/changes
    from ``since``), read with plain HTTP."""
    with httpx.Client(base_url=base_url, verify=ssl if ssl is not None else True, timeout=30) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        r = c.get("/_matrix/client/v3/sync", params={"since": since, "timeout": 0})
        assert r.status_code == 200, r.text
        in_sync = user_id in r.json().get("device_lists", {}).get("changed", [])
        r = c.get(
            "/_matrix/client/v3/keys/changes",
            params={"from": since, "to": r.json()["next_batch"]},
        )
        assert r.status_code == 200, r.text
        return in_sync, user_id in r.json()["changed"]


async def _sees_change(watcher: Any, watcher_ssl: Any, since: str, user_id: str, what: str) -> None:
    """``user_id`` shows in ``watcher``'s /sync device_lists.changed and /keys/changes
    since ``since``."""
    deadline = time.monotonic() + WAIT_S
    seen = (False, False)
    while time.monotonic() < deadline and seen != (True, True):
        seen = await asyncio.to_thread(
            _changed, watcher.homeserver, watcher.access_token, since, user_id, watcher_ssl
        )
        if seen != (True, True):
            await asyncio.sleep(0.5)
    assert seen == (True, True), f"{what}: (/sync changed, /keys/changes) = {seen}"


async def _sees_new_device(watcher: Any, watcher_ssl: Any, since: str, new: Any, what: str) -> None:
    """The new device of ``new.user_id`` shows in ``watcher``'s device lists, and a key
    query through ``watcher``'s server returns its keys."""
    await _sees_change(watcher, watcher_ssl, since, new.user_id, what)
    await _knows_device(watcher, new.user_id, new.device_id)


def test_encrypted_conversation_between_nio_on_pocketserver_and_nio_on_synapse(
    pocket: RunningServer, synapse: SynapsePeer, tmp_path: Path
) -> None:
    alice_id = pocket.register("ealice")["user_id"]
    bob_id = synapse.register("ebob")["user_id"]
    syn_ssl = trusting(synapse.ca_path)
    for name in ("alice", "bob", "alice2", "bob2"):
        (tmp_path / name).mkdir()

    async def scenario() -> None:
        alice = await _login(pocket.base_url, alice_id, tmp_path / "alice")
        bob = await _login(synapse.base_url, bob_id, tmp_path / "bob", ssl=syn_ssl)
        extra: list[Any] = []
        try:
            await _sync(alice)
            await _sync(bob)
            # The room lives on pocketserver.
            await _conversation(alice, bob, "secret from the pi", "secret from synapse")
            # The room lives on Synapse.
            await _conversation(bob, alice, "synapse's room, sealed", "the pi's answer, sealed")

            # A new device of bob's (on Synapse) reaches alice's server, and back.
            since = alice.next_batch
            bob2 = await _login(
                synapse.base_url, bob_id, tmp_path / "bob2", ssl=syn_ssl, device="b2"
            )
            extra.append(bob2)
            await _sync(bob2)
            await _sees_new_device(alice, None, since, bob2, "bob's new device")

            # Bob renames a device: Synapse's update carries no name (names are not
            # shared over federation by default), yet alice is told bob changed.
            since = alice.next_batch
            renamed = await bob.update_device(bob.device_id, {"display_name": "renamed"})
            assert isinstance(renamed, nio.UpdateDeviceResponse), renamed
            await _sees_change(alice, None, since, bob_id, "bob's renamed device")

            since = bob.next_batch
            alice2 = await _login(pocket.base_url, alice_id, tmp_path / "alice2", device="a2")
            extra.append(alice2)
            await _sync(alice2)
            await _sees_new_device(bob, syn_ssl, since, alice2, "alice's new device")
        finally:
            for client in (alice, bob, *extra):
                await client.close()

    asyncio.run(scenario())
