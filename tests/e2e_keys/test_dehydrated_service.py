"""Dehydrated devices (MSC3814) against a real database, no HTTP: storing, replacing,
deleting, the keys they serve and the paging of their to-device messages."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from pocketserver.e2e import dehydrated as dh
from pocketserver.e2e.dehydrated import DehydratedDevices
from pocketserver.e2e.keys import E2eKeys
from pocketserver.e2e.stream import DeviceListStream
from pocketserver.errors import MatrixError
from pocketserver.storage import dehydrated as dh_store
from pocketserver.storage import e2e_keys as keys_store
from pocketserver.storage import to_device as inbox
from pocketserver.storage.db import Database
from pocketserver.storage.deactivation import deactivate_user
from pocketserver.storage.device_info import delete_devices
from pocketserver.streams.notifier import Notifier
from pocketserver.to_device.service import ToDeviceService
from tests.e2e_keys.keys import device_keys, sign, signed_otk

SERVER = "test.local"
ALICE = "@alice:test.local"
BOB = "@bob:test.local"
DATA = {"algorithm": "org.matrix.msc3814.v2", "device_pickle": "cGlja2xl", "nonce": "bm9uY2U"}


def _add_user(conn: Any, user_id: str, *devices: str) -> None:
    conn.execute("INSERT OR IGNORE INTO users (name, creation_ts) VALUES (?, 0)", (user_id,))
    for d in devices:
        conn.execute(
            "INSERT INTO devices (user_id, device_id, created_ts) VALUES (?, ?, 0)", (user_id, d)
        )


class FakeAccounts:
    def __init__(self) -> None:
        self.forgotten: list[bytes] = []

    def forget_tokens(self, hashes: list[bytes]) -> None:
        self.forgotten.extend(hashes)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "dehydrated.db", memory_bytes=4 << 20, synchronous="normal")
    database.write_sync(_add_user, ALICE, "A1")
    database.write_sync(_add_user, BOB, "B1")
    yield database
    database.close()


@pytest.fixture
async def service(db: Database) -> DehydratedDevices:
    notifier = Notifier()
    keys = E2eKeys(db, await DeviceListStream.open(db, notifier), SERVER)
    to_device = await ToDeviceService.open(db, notifier, SERVER)
    return DehydratedDevices(keys, to_device, FakeAccounts())  # type: ignore[arg-type]


def dehydrated_body(device_id: str, *, otks: int = 2, **extra: Any) -> dict[str, Any]:
    """A PUT body as matrix-sdk-crypto makes it: signed device keys with
    ``"dehydrated": true``, one-time keys and a fallback key."""
    sk = nacl.signing.SigningKey.generate()
    keys = device_keys(ALICE, device_id, sk)
    keys = sign({**keys, "dehydrated": True}, ALICE, f"ed25519:{device_id}", sk)
    return {
        "device_id": device_id,
        "device_data": DATA,
        "initial_device_display_name": "Dehydrated device",
        "device_keys": keys,
        "one_time_keys": {
            f"signed_curve25519:K{i}": signed_otk(ALICE, device_id, sk, i) for i in range(otks)
        },
        "fallback_keys": {
            "signed_curve25519:FB": signed_otk(ALICE, device_id, sk, 99, fallback=True)
        },
        **extra,
    }


async def _send(service: DehydratedDevices, device_id: str, n: int, txn: str = "t") -> None:
    for i in range(n):
        await service.to_device.send(
            BOB, "B1", "m.room_key", f"{txn}{i}", {ALICE: {device_id: {"n": i}}}
        )


async def test_put_get_delete(service: DehydratedDevices, db: Database) -> None:
    with pytest.raises(MatrixError) as e:
        await service.get(ALICE)
    assert (e.value.status, e.value.errcode) == (404, "M_NOT_FOUND")
    before = service.keys.stream.position()
    assert await service.put(ALICE, dehydrated_body("DH1")) == "DH1"
    assert service.keys.stream.position() > before
    got = await service.get(ALICE)
    assert (got.device_id, got.device_data) == ("DH1", DATA)
    # Its keys are served like any device's, with the client's dehydrated flag.
    q = await service.keys.query(BOB, {"device_keys": {ALICE: []}})
    served = q["device_keys"][ALICE]["DH1"]  # type: ignore[index]
    assert served["dehydrated"] is True
    assert served["unsigned"] == {"device_display_name": "Dehydrated device"}
    claimed = await service.keys.claim({"one_time_keys": {ALICE: {"DH1": "signed_curve25519"}}})
    assert list(claimed["one_time_keys"][ALICE]["DH1"]) == ["signed_curve25519:K0"]  # type: ignore[index]
    assert await service.keys.counts(ALICE, "DH1") == (
        {"signed_curve25519": 1},
        ["signed_curve25519"],
    )
    # Deleting it takes the device and its keys; a second delete is 404.
    position = service.keys.stream.position()
    assert await service.delete(ALICE) == "DH1"
    assert service.keys.stream.position() > position
    assert await db.read(keys_store.device_exists, ALICE, "DH1") is False
    assert await db.read(keys_store.get_device_keys, ALICE, "DH1") is None
    with pytest.raises(MatrixError) as e:
        await service.delete(ALICE)
    assert e.value.errcode == "M_NOT_FOUND"


async def test_replacing_deletes_the_old_device_and_its_messages(
    service: DehydratedDevices, db: Database
) -> None:
    await service.put(ALICE, dehydrated_body("DH1"))
    await _send(service, "DH1", 3)
    assert len(await db.read(inbox.inbox, ALICE, "DH1")) == 3
    await service.put(ALICE, dehydrated_body("DH2"))
    assert (await service.get(ALICE)).device_id == "DH2"
    assert await db.read(keys_store.device_exists, ALICE, "DH1") is False
    assert await db.read(inbox.inbox, ALICE, "DH1") == []
    assert await db.read(keys_store.one_time_key_counts, ALICE, "DH1") == {}
    q = await service.keys.query(BOB, {"device_keys": {ALICE: []}})
    assert set(q["device_keys"][ALICE]) == {"DH2"}  # type: ignore[index]
    # The same ID again: a fresh device (new keys, empty inbox).
    await _send(service, "DH2", 2, "u")
    await service.put(ALICE, dehydrated_body("DH2", otks=5))
    assert await db.read(inbox.inbox, ALICE, "DH2") == []
    assert await db.read(keys_store.one_time_key_counts, ALICE, "DH2") == {"signed_curve25519": 5}


async def test_cannot_take_an_existing_device_id(service: DehydratedDevices, db: Database) -> None:
    with pytest.raises(MatrixError) as e:
        await service.put(ALICE, dehydrated_body("A1"))
    assert (e.value.status, e.value.errcode) == (400, "M_INVALID_PARAM")
    assert await db.read(dh_store.get, ALICE) is None
    # A failed replacement keeps the old dehydrated device.
    await service.put(ALICE, dehydrated_body("DH1"))
    with pytest.raises(MatrixError):
        await service.put(ALICE, dehydrated_body("A1"))
    assert (await service.get(ALICE)).device_id == "DH1"


@pytest.mark.parametrize(
    ("change", "status", "errcode"),
    [
        ({"device_id": None}, 400, "M_MISSING_PARAM"),
        ({"device_id": 5}, 400, "M_BAD_JSON"),
        ({"device_id": ""}, 400, "M_INVALID_PARAM"),
        ({"device_id": "x" * 256}, 400, "M_INVALID_PARAM"),
        ({"device_data": None}, 400, "M_MISSING_PARAM"),
        ({"device_data": "opaque"}, 400, "M_BAD_JSON"),
        ({"device_data": {"device_pickle": "x"}}, 400, "M_BAD_JSON"),
        ({"device_data": {"algorithm": "a", "p": "x" * (64 * 1024)}}, 413, "M_TOO_LARGE"),
        ({"device_keys": None}, 400, "M_MISSING_PARAM"),
        ({"device_keys": "keys"}, 400, "M_BAD_JSON"),
        ({"initial_device_display_name": 3}, 400, "M_BAD_JSON"),
        ({"initial_device_display_name": "n" * 256}, 400, "M_INVALID_PARAM"),
        ({"one_time_keys": {"nocolon": "k"}}, 400, "M_INVALID_PARAM"),
    ],
)
async def test_bad_bodies(
    service: DehydratedDevices, db: Database, change: dict[str, Any], status: int, errcode: str
) -> None:
    body = dehydrated_body("DH1")
    for key, value in change.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    with pytest.raises(MatrixError) as e:
        await service.put(ALICE, body)
    assert (e.value.status, e.value.errcode) == (status, errcode)
    assert await db.read(dh_store.get, ALICE) is None
    assert await db.read(keys_store.device_exists, ALICE, "DH1") is False


async def test_bad_device_keys(service: DehydratedDevices) -> None:
    body = dehydrated_body("DH1")
    for keys, errcode in [
        ({**body["device_keys"], "dehydrated": False}, "M_INVALID_PARAM"),
        ({**body["device_keys"], "algorithms": None}, "M_BAD_JSON"),
        (dehydrated_body("OTHER")["device_keys"], "M_BAD_JSON"),
    ]:
        with pytest.raises(MatrixError) as e:
            await service.put(ALICE, {**body, "device_keys": keys})
        assert e.value.errcode == errcode
    # Device keys without the flag are taken as they are (older clients).
    plain = device_keys(ALICE, "DH2", nacl.signing.SigningKey.generate())
    await service.put(ALICE, {**dehydrated_body("DH2"), "device_keys": plain})


async def test_events_pages_without_deleting(service: DehydratedDevices, db: Database) -> None:
    await service.put(ALICE, dehydrated_body("DH1"))
    await _send(service, "DH1", 250)
    await service.to_device.send(BOB, "B1", "m.other", "x", {ALICE: {"A1": {}}})
    seen: list[int] = []
    token = None
    pages = []
    while True:
        batch = await service.events(ALICE, "DH1", token)
        pages.append((len(batch.events), batch.limited))
        if not batch.events:
            break
        seen.extend(int(e["content"]["n"]) for e in batch.events)  # type: ignore[call-overload]
        assert {e["sender"] for e in batch.events} == {BOB}
        assert {e["type"] for e in batch.events} == {"m.room_key"}
        token = batch.next_batch
    assert seen == list(range(250))
    assert pages == [(100, True), (100, True), (50, False), (0, False)]
    # Nothing was deleted: an interrupted rehydration can start over.
    assert len(await db.read(inbox.inbox, ALICE, "DH1")) == 250
    again = await service.events(ALICE, "DH1", None, limit=10)
    assert [e["content"] for e in again.events] == [{"n": i} for i in range(10)]
    assert again.limited
    # A message sent after the last token is found from it.
    await _send(service, "DH1", 1, "late")
    late = await service.events(ALICE, "DH1", token)
    assert [e["content"] for e in late.events] == [{"n": 0}]
    assert (await service.events(ALICE, "DH1", late.next_batch)).events == []


async def test_events_errors(service: DehydratedDevices) -> None:
    with pytest.raises(MatrixError) as e:
        await service.events(ALICE, "DH1", None)
    assert (e.value.status, e.value.errcode) == (403, "M_FORBIDDEN")
    await service.put(ALICE, dehydrated_body("DH1"))
    for device_id in ("A1", "DH2"):
        with pytest.raises(MatrixError) as e:
            await service.events(ALICE, device_id, None)
        assert (e.value.status, e.value.errcode) == (403, "M_FORBIDDEN")
    with pytest.raises(MatrixError) as e:
        await service.events(BOB, "DH1", None)
    assert e.value.errcode == "M_FORBIDDEN"
    for token in ("", "d", "x5", "d-1", "d1.5", "d" + "9" * 19, "d٣"):
        with pytest.raises(MatrixError) as e:
            await service.events(ALICE, "DH1", token)
        assert (e.value.status, e.value.errcode) == (400, "M_INVALID_PARAM"), token
    with pytest.raises(MatrixError) as e:
        await service.events(ALICE, "DH1", None, limit=0)
    assert e.value.errcode == "M_INVALID_PARAM"
    # A token past the stream's end is answered with nothing, never an error.
    assert (await service.events(ALICE, "DH1", "d999999")).events == []
    assert dh.parse_token("d42") == 42


async def test_every_way_of_deleting_the_device_drops_it(
    service: DehydratedDevices, db: Database
) -> None:
    await service.put(ALICE, dehydrated_body("DH1"))
    await db.write(delete_devices, ALICE, ["DH1"])
    assert await db.read(dh_store.get, ALICE) is None
    await service.put(ALICE, dehydrated_body("DH2"))
    await _send(service, "DH2", 2)
    await db.write(partial(deactivate_user, erase=False), ALICE)
    assert await db.read(dh_store.get, ALICE) is None
    assert await db.read(inbox.inbox, ALICE, "DH2") == []
    assert await db.read(keys_store.get_device_keys, ALICE, "DH2") is None


async def test_login_cannot_take_over_the_dehydrated_device(
    service: DehydratedDevices, db: Database
) -> None:
    from pocketserver.accounts.service import AccountService
    from pocketserver.storage import devices as device_store

    await service.put(ALICE, dehydrated_body("DH1"))
    with pytest.raises(MatrixError) as e:
        await db.write(
            AccountService._store_session,  # the login transaction
            ALICE,
            "DH1",
            None,
            b"\x00" * 32,
        )
    assert (e.value.status, e.value.errcode) == (400, "M_INVALID_PARAM")
    assert await db.read(device_store.token_hashes_for_device, ALICE, "DH1") == []
