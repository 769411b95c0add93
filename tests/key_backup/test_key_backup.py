"""Key backup storage and service: versions, keys, replacement, etag/count, errors, streaming."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pocketserver.errors import MatrixError
from pocketserver.key_backup import service as svc
from pocketserver.key_backup.service import KeyBackupService
from pocketserver.storage.db import Database

ALICE = "@alice:local.test"
BOB = "@bob:local.test"
ROOM = "!room:local.test"
ROOM2 = "!zoo:local.test"
ALG = "m.megolm_backup.v1.curve25519-aes-sha2"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "kb.db", memory_bytes=16 << 20, synchronous="normal")
    yield database
    database.close()


@pytest.fixture
def service(db: Database) -> KeyBackupService:
    return KeyBackupService(db, max_keys=10)


def _key(verified: bool = False, first: int = 0, forwarded: int = 0, tag: str = "x") -> dict:
    return {
        "first_message_index": first,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ciphertext": tag},
    }


async def _err(coro: object) -> tuple[int, str, dict[str, object]]:
    with pytest.raises(MatrixError) as exc:
        await coro  # type: ignore[misc]
    return exc.value.status, exc.value.errcode, exc.value.to_json()


async def _all(service: KeyBackupService, user: str, version: str, room: str | None = None):
    chunks = await service.stream_keys(user, version, room)
    return json.loads(b"".join([c async for c in chunks]))


async def test_version_lifecycle(service: KeyBackupService) -> None:
    assert (await _err(service.get_version(ALICE, None)))[:2] == (404, "M_NOT_FOUND")
    v1 = await service.create_version(ALICE, {"algorithm": ALG, "auth_data": {"public_key": "a"}})
    assert v1 == "1"
    info = await service.get_version(ALICE, None)
    assert svc.version_json(info) == {
        "algorithm": ALG,
        "auth_data": {"public_key": "a"},
        "count": 0,
        "etag": "0",
        "version": "1",
    }
    v2 = await service.create_version(ALICE, {"algorithm": ALG, "auth_data": {}})
    assert v2 == "2"
    assert (await service.get_version(ALICE, None)).version == 2
    assert (await service.get_version(ALICE, "1")).version == 1
    # Bob has his own versions.
    assert (await _err(service.get_version(BOB, "1")))[:2] == (404, "M_NOT_FOUND")
    # Update auth_data (body version optional, must match).
    await service.update_version(ALICE, "1", {"algorithm": ALG, "auth_data": {"k": 1}})
    await service.update_version(
        ALICE, "1", {"algorithm": ALG, "auth_data": {"k": 2}, "version": "1"}
    )
    assert (await service.get_version(ALICE, "1")).auth_data == {"k": 2}
    bad = {"algorithm": ALG, "auth_data": {}, "version": "2"}
    assert (await _err(service.update_version(ALICE, "1", bad)))[:2] == (400, "M_INVALID_PARAM")
    other = {"algorithm": "m.other", "auth_data": {}}
    assert (await _err(service.update_version(ALICE, "1", other)))[:2] == (400, "M_INVALID_PARAM")
    good = {"algorithm": ALG, "auth_data": {}}
    assert (await _err(service.update_version(ALICE, "9", good)))[:2] == (404, "M_NOT_FOUND")
    # Delete the current one: the older becomes current; deleting again succeeds.
    await service.delete_version(ALICE, "2")
    await service.delete_version(ALICE, "2")
    assert (await service.get_version(ALICE, None)).version == 1
    assert (await _err(service.get_version(ALICE, "2")))[:2] == (404, "M_NOT_FOUND")
    assert (await _err(service.update_version(ALICE, "2", good)))[:2] == (404, "M_NOT_FOUND")
    assert (await _err(service.delete_version(ALICE, "7")))[:2] == (404, "M_NOT_FOUND")
    assert (await _err(service.delete_version(ALICE, "x")))[:2] == (404, "M_NOT_FOUND")
    # Versions are never reused.
    assert await service.create_version(ALICE, good) == "3"


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"auth_data": {}}, "M_MISSING_PARAM"),
        ({"algorithm": ALG}, "M_MISSING_PARAM"),
        ({"algorithm": 1, "auth_data": {}}, "M_BAD_JSON"),
        ({"algorithm": "", "auth_data": {}}, "M_INVALID_PARAM"),
        ({"algorithm": ALG, "auth_data": []}, "M_BAD_JSON"),
    ],
)
async def test_create_version_rejects_bad_bodies(
    service: KeyBackupService, body: dict, errcode: str
) -> None:
    assert (await _err(service.create_version(ALICE, body)))[1] == errcode
    assert (await _err(service.get_version(ALICE, None)))[1] == "M_NOT_FOUND"


async def test_auth_data_size_is_bounded(service: KeyBackupService) -> None:
    body = {"algorithm": ALG, "auth_data": {"x": "a" * svc.MAX_AUTH_DATA_BYTES}}
    assert (await _err(service.create_version(ALICE, body)))[:2] == (413, "M_TOO_LARGE")


async def test_keys_replacement_etag_and_count(service: KeyBackupService) -> None:
    await service.create_version(ALICE, {"algorithm": ALG, "auth_data": {}})
    put = service.put_keys
    info = await put(ALICE, "1", [svc.parse_key(ROOM, "s1", _key(first=5, tag="a"))])
    assert (info.etag, info.count) == (1, 1)
    # Worse (higher first_message_index): kept, etag unchanged.
    info = await put(ALICE, "1", [svc.parse_key(ROOM, "s1", _key(first=7, tag="b"))])
    assert (info.etag, info.count) == (1, 1)
    assert (await service.get_key(ALICE, "1", ROOM, "s1")).to_json()["session_data"] == {
        "ciphertext": "a"
    }
    # Better: replaced, etag changes, count does not.
    info = await put(ALICE, "1", [svc.parse_key(ROOM, "s1", _key(first=2, tag="c"))])
    assert (info.etag, info.count) == (2, 1)
    # Verified beats a lower index.
    info = await put(ALICE, "1", [svc.parse_key(ROOM, "s1", _key(True, first=9, tag="d"))])
    assert (await service.get_key(ALICE, "1", ROOM, "s1")).quality.is_verified
    # Then unverified never replaces it.
    await put(ALICE, "1", [svc.parse_key(ROOM, "s1", _key(False, first=0, tag="e"))])
    assert (await service.get_key(ALICE, "1", ROOM, "s1")).to_json()["session_data"] == {
        "ciphertext": "d"
    }
    keys = svc.parse_all_keys(
        {"rooms": {ROOM: {"sessions": {"s2": _key()}}, ROOM2: {"sessions": {"s1": _key()}}}}
    )
    info = await put(ALICE, "1", keys)
    assert info.count == 3
    etag = info.etag
    assert await _all(service, ALICE, "1") == {
        "rooms": {
            ROOM: {"sessions": {"s1": _key(True, 9, tag="d"), "s2": _key()}},
            ROOM2: {"sessions": {"s1": _key()}},
        }
    }
    assert await _all(service, ALICE, "1", ROOM2) == {"sessions": {"s1": _key()}}
    assert await _all(service, ALICE, "1", "!none:local.test") == {"sessions": {}}
    # Deleting: one session, a room, everything.
    info = await service.delete_keys(ALICE, "1", ROOM, "s2")
    assert (info.count, info.etag) == (2, etag + 1)
    info = await service.delete_keys(ALICE, "1", ROOM, "nothing")
    assert (info.count, info.etag) == (2, etag + 1)
    info = await service.delete_keys(ALICE, "1", ROOM, None)
    assert info.count == 1
    info = await service.delete_keys(ALICE, "1", None, None)
    assert info.count == 0
    assert await _all(service, ALICE, "1") == {"rooms": {}}
    assert (await _err(service.get_key(ALICE, "1", ROOM, "s1")))[:2] == (404, "M_NOT_FOUND")


async def test_writes_only_to_the_current_version(service: KeyBackupService) -> None:
    key = [svc.parse_key(ROOM, "s1", _key())]
    assert (await _err(service.put_keys(ALICE, "1", key)))[:2] == (404, "M_NOT_FOUND")
    await service.create_version(ALICE, {"algorithm": ALG, "auth_data": {}})
    await service.put_keys(ALICE, "1", key)
    await service.create_version(ALICE, {"algorithm": ALG, "auth_data": {}})
    for version in ("1", "5", "abc"):
        status, errcode, body = await _err(service.put_keys(ALICE, version, key))
        assert (status, errcode, body["current_version"]) == (403, "M_WRONG_ROOM_KEYS_VERSION", "2")
    # The old version is still readable and its keys deletable.
    assert (await service.get_key(ALICE, "1", ROOM, "s1")).session_id == "s1"
    assert (await service.delete_keys(ALICE, "1", None, None)).count == 0
    # Deleting a version deletes its keys; reading it is then 404.
    await service.put_keys(ALICE, "2", key)
    await service.delete_version(ALICE, "2")
    assert (await _err(service.stream_keys(ALICE, "2", None)))[:2] == (404, "M_NOT_FOUND")
    assert (await _err(service.delete_keys(ALICE, "2", None, None)))[:2] == (404, "M_NOT_FOUND")
    assert (await _err(service.put_keys(ALICE, "2", key)))[:2] == (403, "M_WRONG_ROOM_KEYS_VERSION")


async def test_key_limit(service: KeyBackupService) -> None:
    await service.create_version(ALICE, {"algorithm": ALG, "auth_data": {}})
    keys = [svc.parse_key(ROOM, f"s{i}", _key()) for i in range(11)]
    assert (await _err(service.put_keys(ALICE, "1", keys)))[:2] == (413, "M_TOO_LARGE")
    assert (await service.get_version(ALICE, "1")).count == 0
    assert (await service.put_keys(ALICE, "1", keys[:10])).count == 10


async def test_streaming_pages(service: KeyBackupService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(svc, "PAGE", 3)
    service = KeyBackupService(service.db, max_keys=100)
    await service.create_version(ALICE, {"algorithm": ALG, "auth_data": {}})
    rooms = {f"!r{r}:local.test": {f"s{s}": _key(first=s) for s in range(r + 1)} for r in range(4)}
    keys = svc.parse_all_keys({"rooms": {r: {"sessions": s} for r, s in rooms.items()}})
    await service.put_keys(ALICE, "1", keys)
    assert await _all(service, ALICE, "1") == {
        "rooms": {r: {"sessions": s} for r, s in rooms.items()}
    }
    assert await _all(service, ALICE, "1", "!r3:local.test") == {
        "sessions": rooms["!r3:local.test"]
    }


@pytest.mark.parametrize(
    ("data", "errcode"),
    [
        ("x", "M_BAD_JSON"),
        ({**_key(), "is_verified": 1}, "M_BAD_JSON"),
        ({**_key(), "first_message_index": True}, "M_BAD_JSON"),
        ({**_key(), "first_message_index": -1}, "M_INVALID_PARAM"),
        ({**_key(), "forwarded_count": "1"}, "M_BAD_JSON"),
        ({k: v for k, v in _key().items() if k != "forwarded_count"}, "M_BAD_JSON"),
        ({**_key(), "session_data": 5}, "M_BAD_JSON"),
        ({**_key(), "session_data": {"x": "a" * svc.MAX_SESSION_DATA_BYTES}}, "M_TOO_LARGE"),
    ],
)
def test_bad_key_data(data: object, errcode: str) -> None:
    with pytest.raises(MatrixError) as exc:
        svc.parse_key(ROOM, "s1", data)
    assert exc.value.errcode == errcode


def test_bad_ids_and_shapes() -> None:
    for call in (
        lambda: svc.parse_key("not-a-room", "s", _key()),
        lambda: svc.parse_key(ROOM, "", _key()),
        lambda: svc.parse_room_keys("bad", {"sessions": {}}),
    ):
        with pytest.raises(MatrixError) as exc:
            call()
        assert exc.value.errcode == "M_INVALID_PARAM"
    for body, errcode in (
        ({}, "M_MISSING_PARAM"),
        ({"rooms": []}, "M_BAD_JSON"),
        ({"rooms": {ROOM: []}}, "M_BAD_JSON"),
        ({"rooms": {ROOM: {}}}, "M_MISSING_PARAM"),
        ({"rooms": {ROOM: {"sessions": []}}}, "M_BAD_JSON"),
    ):
        with pytest.raises(MatrixError) as exc:
            svc.parse_all_keys(body)
        assert exc.value.errcode == errcode
