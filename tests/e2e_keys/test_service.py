"""Key uploads, claims and device deletion against a real database (no HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
import trio

from pocketserver.e2e.cross_signing import CrossSigning
from pocketserver.e2e.keys import MAX_KEYS_PER_UPLOAD, E2eKeys
from pocketserver.e2e.stream import DeviceListStream
from pocketserver.errors import MatrixError
from pocketserver.storage import e2e_keys as store
from pocketserver.storage.db import Database
from pocketserver.storage.device_info import delete_devices
from pocketserver.streams.notifier import Notifier
from tests.e2e_keys.keys import cross_signing_key, device_keys, public, sign, signed_otk

SERVER = "test.local"
ALICE = "@alice:test.local"
BOB = "@bob:test.local"


def _add_user(conn, user_id: str, *devices: str) -> None:
    conn.execute("INSERT OR IGNORE INTO users (name, creation_ts) VALUES (?, 0)", (user_id,))
    for d in devices:
        conn.execute(
            "INSERT INTO devices (user_id, device_id, created_ts) VALUES (?, ?, 0)", (user_id, d)
        )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "keys.db", memory_bytes=4 << 20, synchronous="normal")
    database.write_sync(_add_user, ALICE, "A1", "A2")
    database.write_sync(_add_user, BOB, "B1")
    yield database
    database.close()


@pytest.fixture
async def keys(db: Database) -> E2eKeys:
    stream = await DeviceListStream.open(db, Notifier())
    return E2eKeys(db, stream, SERVER)


@pytest.fixture
def sk() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey.generate()


def _otks(user: str, dev: str, sk: nacl.signing.SigningKey, start: int, n: int) -> dict:
    return {
        f"signed_curve25519:K{i}": signed_otk(user, dev, sk, i) for i in range(start, start + n)
    }


async def test_upload_counts_and_device_list_position(keys: E2eKeys, sk) -> None:
    before = keys.stream.position()
    counts = await keys.upload(
        ALICE,
        "A1",
        {
            "device_keys": device_keys(ALICE, "A1", sk),
            "one_time_keys": _otks(ALICE, "A1", sk, 0, 5),
        },
    )
    assert counts == {"signed_curve25519": 5}
    assert keys.stream.position() == before + 1
    assert keys.stream.notifier.stream_position("device_lists") == before + 1
    # The same device keys again: no change to the device list.
    again = await keys.upload(ALICE, "A1", {"device_keys": device_keys(ALICE, "A1", sk)})
    assert again == {"signed_curve25519": 5}
    assert keys.stream.position() == before + 1


async def test_one_time_key_reuse(keys: E2eKeys, sk) -> None:
    otks = _otks(ALICE, "A1", sk, 0, 2)
    await keys.upload(ALICE, "A1", {"one_time_keys": otks})
    assert await keys.upload(ALICE, "A1", {"one_time_keys": otks}) == {"signed_curve25519": 2}
    changed = {"signed_curve25519:K0": signed_otk(ALICE, "A1", sk, 99)}
    with pytest.raises(MatrixError) as e:
        await keys.upload(
            ALICE, "A1", {"one_time_keys": {**_otks(ALICE, "A1", sk, 5, 1), **changed}}
        )
    assert (e.value.status, e.value.errcode) == (400, "M_INVALID_PARAM")
    # Nothing of the failed upload was stored.
    assert (await keys.counts(ALICE, "A1"))[0] == {"signed_curve25519": 2}


async def test_upload_bounds(keys: E2eKeys, sk) -> None:
    too_many = {f"curve25519:K{i}": "k" for i in range(MAX_KEYS_PER_UPLOAD + 1)}
    with pytest.raises(MatrixError) as e:
        await keys.upload(ALICE, "A1", {"one_time_keys": too_many})
    assert e.value.errcode == "M_INVALID_PARAM"
    two = {"signed_curve25519:F1": "a", "signed_curve25519:F2": "b"}
    with pytest.raises(MatrixError) as e:
        await keys.upload(ALICE, "A1", {"fallback_keys": two})
    assert e.value.errcode == "M_INVALID_PARAM"


async def test_claims_never_hand_out_a_key_twice(keys: E2eKeys, sk) -> None:
    await keys.upload(ALICE, "A1", {"one_time_keys": _otks(ALICE, "A1", sk, 0, 40)})
    await keys.upload(
        ALICE,
        "A1",
        {
            "fallback_keys": {
                "signed_curve25519:FB": signed_otk(ALICE, "A1", sk, 1000, fallback=True)
            }
        },
    )
    got: list[str] = []

    async def claim() -> None:
        r = await keys.claim({"one_time_keys": {ALICE: {"A1": "signed_curve25519"}}})
        got.extend(r["one_time_keys"][ALICE]["A1"])  # type: ignore[index]

    async with trio.open_nursery() as n:
        for _ in range(60):
            n.start_soon(claim)
    otks = [k for k in got if k != "signed_curve25519:FB"]
    assert len(otks) == len(set(otks)) == 40
    assert got.count("signed_curve25519:FB") == 20
    counts, unused = await keys.counts(ALICE, "A1")
    assert counts == {}
    assert unused == []


async def test_claims_oldest_first_then_fallback(keys: E2eKeys, sk) -> None:
    await keys.upload(ALICE, "A1", {"one_time_keys": _otks(ALICE, "A1", sk, 0, 1)})
    await keys.upload(ALICE, "A1", {"one_time_keys": _otks(ALICE, "A1", sk, 1, 1)})
    fb = {"signed_curve25519:FB": signed_otk(ALICE, "A1", sk, 1000, fallback=True)}
    await keys.upload(ALICE, "A1", {"fallback_keys": fb})
    assert (await keys.counts(ALICE, "A1"))[1] == ["signed_curve25519"]
    want = {
        "one_time_keys": {
            ALICE: {"A1": "signed_curve25519", "A2": "signed_curve25519", "NOPE": "x"}
        }
    }
    first = await keys.claim(want)
    assert first == {
        "one_time_keys": {
            ALICE: {
                "A1": {"signed_curve25519:K0": _otks(ALICE, "A1", sk, 0, 1)["signed_curve25519:K0"]}
            }
        },
        "failures": {},
    }
    assert list((await keys.claim(want))["one_time_keys"][ALICE]["A1"]) == ["signed_curve25519:K1"]  # type: ignore[index]
    third = await keys.claim(want)
    assert third["one_time_keys"][ALICE]["A1"] == fb  # type: ignore[index]
    assert (await keys.counts(ALICE, "A1"))[1] == []
    # The same fallback key again stays used; a new one is unused.
    await keys.upload(ALICE, "A1", {"fallback_keys": fb})
    assert (await keys.counts(ALICE, "A1"))[1] == []
    fb2 = {"signed_curve25519:FB2": signed_otk(ALICE, "A1", sk, 1001, fallback=True)}
    await keys.upload(ALICE, "A1", {"fallback_keys": fb2})
    assert (await keys.counts(ALICE, "A1"))[1] == ["signed_curve25519"]


async def test_remote_users_are_failures(keys: E2eKeys) -> None:
    r = await keys.claim({"one_time_keys": {"@x:elsewhere.example": {"D": "signed_curve25519"}}})
    assert r["failures"] == {
        "elsewhere.example": {"status": 503, "message": "federation is not available"}
    }
    q = await keys.query(ALICE, {"device_keys": {"@x:elsewhere.example": []}})
    assert list(q["failures"]) == ["elsewhere.example"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"device_keys": []},
        {"device_keys": {"not-a-user": []}},
        {"device_keys": {ALICE: "A1"}},
        {"device_keys": {ALICE: [1]}},
    ],
)
async def test_bad_queries(keys: E2eKeys, body: dict) -> None:
    with pytest.raises(MatrixError) as e:
        await keys.query(ALICE, body)
    assert e.value.status == 400


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"one_time_keys": []},
        {"one_time_keys": {"bad": {}}},
        {"one_time_keys": {ALICE: {"A1": 1}}},
    ],
)
async def test_bad_claims(keys: E2eKeys, body: dict) -> None:
    with pytest.raises(MatrixError) as e:
        await keys.claim(body)
    assert e.value.status == 400


async def test_deleting_a_device_deletes_its_keys(db: Database, keys: E2eKeys, sk) -> None:
    await keys.upload(
        ALICE,
        "A1",
        {
            "device_keys": device_keys(ALICE, "A1", sk),
            "one_time_keys": _otks(ALICE, "A1", sk, 0, 3),
            "fallback_keys": {
                "signed_curve25519:FB": signed_otk(ALICE, "A1", sk, 9, fallback=True)
            },
        },
    )
    await db.write(store.add_signature, ALICE, "A1", ALICE, "ed25519:ssk", "sig")
    position = keys.stream.position()
    await db.write(delete_devices, ALICE, ["A1"])
    keys.stream.poke()
    await keys.stream.refresh()
    assert keys.stream.position() == position + 1

    def leftovers(conn) -> int:
        return (
            sum(
                conn.execute(f"SELECT count(*) FROM {t} WHERE user_id = ?", (ALICE,)).fetchone()[0]
                for t in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys")
            )
            + conn.execute("SELECT count(*) FROM e2e_signatures").fetchone()[0]
        )

    assert await db.read(leftovers) == 0
    q = await keys.query(BOB, {"device_keys": {ALICE: []}})
    assert q["device_keys"] == {ALICE: {}}


async def test_upload_for_a_deleted_device(db: Database, keys: E2eKeys, sk) -> None:
    await db.write(delete_devices, ALICE, ["A2"])
    with pytest.raises(MatrixError) as e:
        await keys.upload(ALICE, "A2", {"device_keys": device_keys(ALICE, "A2", sk)})
    assert e.value.errcode == "M_UNKNOWN_TOKEN"


async def test_cross_signing_and_signature_visibility(db: Database, keys: E2eKeys, sk) -> None:
    cs = CrossSigning(db, keys.stream)
    a_master, a_ssk, a_usk = (nacl.signing.SigningKey.generate() for _ in range(3))
    b_master = nacl.signing.SigningKey.generate()
    await keys.upload(ALICE, "A1", {"device_keys": device_keys(ALICE, "A1", sk)})
    body = {
        "master_key": cross_signing_key(ALICE, "master", a_master, None),
        "self_signing_key": cross_signing_key(ALICE, "self_signing", a_ssk, a_master),
        "user_signing_key": cross_signing_key(ALICE, "user_signing", a_usk, a_master),
    }
    assert not await cs.needs_auth(ALICE, body)
    await cs.upload_keys(ALICE, body)
    assert not await cs.needs_auth(ALICE, body)
    assert await cs.needs_auth(
        ALICE, {"master_key": cross_signing_key(ALICE, "master", b_master, None)}
    )
    await cs.upload_keys(BOB, {"master_key": cross_signing_key(BOB, "master", b_master, None)})
    bob_master = cross_signing_key(BOB, "master", b_master, None)
    failures = await cs.upload_signatures(
        ALICE,
        {
            ALICE: {
                "A1": sign(device_keys(ALICE, "A1", sk), ALICE, f"ed25519:{public(a_ssk)}", a_ssk),
                public(a_master): sign(body["master_key"], ALICE, "ed25519:A1", sk),
                "NOPE": {"x": 1},
            },
            BOB: {public(b_master): sign(bob_master, ALICE, f"ed25519:{public(a_usk)}", a_usk)},
        },
    )
    assert failures == {ALICE: {"NOPE": {"errcode": "M_NOT_FOUND", "error": "unknown key NOPE"}}}
    mine = await keys.query(ALICE, {"device_keys": {ALICE: [], BOB: []}})
    a1 = mine["device_keys"][ALICE]["A1"]  # type: ignore[index]
    assert f"ed25519:{public(a_ssk)}" in a1["signatures"][ALICE]
    assert "ed25519:A1" in mine["master_keys"][ALICE]["signatures"][ALICE]  # type: ignore[index]
    assert f"ed25519:{public(a_usk)}" in mine["master_keys"][BOB]["signatures"][ALICE]  # type: ignore[index]
    assert list(mine["user_signing_keys"]) == [ALICE]  # type: ignore[arg-type]
    assert list(mine["self_signing_keys"]) == [ALICE]  # type: ignore[arg-type]
    # Bob sees Alice's own signatures, not what her user-signing key signed of his.
    his = await keys.query(BOB, {"device_keys": {ALICE: [], BOB: []}})
    assert "signatures" not in his["master_keys"][BOB]  # type: ignore[index]
    assert his["user_signing_keys"] == {}
    assert "ed25519:A1" in his["master_keys"][ALICE]["signatures"][ALICE]  # type: ignore[index]


async def test_bad_cross_signing_uploads(db: Database, keys: E2eKeys) -> None:
    cs = CrossSigning(db, keys.stream)
    master, ssk, other = (nacl.signing.SigningKey.generate() for _ in range(3))
    with pytest.raises(MatrixError) as e:
        await cs.upload_keys(
            ALICE, {"self_signing_key": cross_signing_key(ALICE, "self_signing", ssk, master)}
        )
    assert (e.value.status, e.value.errcode) == (400, "M_MISSING_PARAM")
    with pytest.raises(MatrixError) as e:
        await cs.upload_keys(
            ALICE,
            {
                "master_key": cross_signing_key(ALICE, "master", master, None),
                "self_signing_key": cross_signing_key(ALICE, "self_signing", ssk, other),
            },
        )
    assert (e.value.status, e.value.errcode) == (400, "M_INVALID_SIGNATURE")
    with pytest.raises(MatrixError) as e:
        await cs.upload_keys(ALICE, {"master_key": cross_signing_key(BOB, "master", master, None)})
    assert (e.value.status, e.value.errcode) == (400, "M_INVALID_PARAM")
    assert await db.read(store.cross_signing_keys, [ALICE]) == {}


async def test_cross_signing_key_may_not_be_a_device_id(db: Database, keys: E2eKeys) -> None:
    cs = CrossSigning(db, keys.stream)
    master = nacl.signing.SigningKey.generate()
    await db.write(_add_user, ALICE, public(master))
    with pytest.raises(MatrixError) as e:
        await cs.upload_keys(
            ALICE, {"master_key": cross_signing_key(ALICE, "master", master, None)}
        )
    assert (e.value.status, e.value.errcode) == (403, "M_FORBIDDEN")
