"""media_upload_quota_per_user in-process: checked before, while and after reading a body."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from pocketserver.config import load_config
from pocketserver.config.model import Config
from pocketserver.errors import MatrixError
from pocketserver.media.repository import MediaRepository
from pocketserver.storage import media as media_db
from pocketserver.storage.db import Database
from tests.harness import make_config

ALICE = "@alice:test.local"
BOB = "@bob:test.local"
QUOTA = 10_000


async def chunks_of(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await trio.lowlevel.checkpoint()
        yield data[i : i + size]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(
        make_config(tmp_path, max_upload_size="1M", media_upload_quota_per_user=QUOTA)
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "m.db", memory_bytes=4 * 1024 * 1024)
    yield database
    database.close()


@pytest.fixture
def repo(config: Config, db: Database) -> MediaRepository:
    return MediaRepository(db, config)


def content_files(repo: MediaRepository) -> list[Path]:
    return sorted(p for p in (repo.store.root / "content").rglob("*") if p.is_file())


def temp_files(repo: MediaRepository) -> list[Path]:
    return list((repo.store.root / "tmp").iterdir())


async def upload(repo: MediaRepository, user: str, data: bytes) -> str:
    uri = await repo.upload(user, chunks_of(data), content_type="a/b", upload_name=None)
    return uri.rsplit("/", 1)[1]


async def refused(repo: MediaRepository, user: str, data: bytes) -> MatrixError:
    with pytest.raises(MatrixError) as e:
        await upload(repo, user, data)
    return e.value


def assert_quota_error(e: MatrixError) -> None:
    assert (e.status, e.errcode) == (403, "M_FORBIDDEN"), e
    assert "quota" in e.error


async def stored(db: Database, user: str) -> int:
    return int(await db.read(media_db.stored_bytes, user))


async def test_quota_is_enforced_while_reading_and_keeps_nothing(
    repo: MediaRepository, db: Database
) -> None:
    await upload(repo, ALICE, os.urandom(6000))
    # 5000 more do not fit: refused after 4000 bytes were read, nothing kept.
    assert_quota_error(await refused(repo, ALICE, os.urandom(5000)))
    assert temp_files(repo) == []
    assert len(content_files(repo)) == 1
    assert await stored(db, ALICE) == 6000
    # Exactly the rest fits; then the quota is full.
    await upload(repo, ALICE, os.urandom(4000))
    assert await stored(db, ALICE) == QUOTA
    assert_quota_error(await refused(repo, ALICE, b"x"))
    await upload(repo, ALICE, b"")  # an empty upload stores nothing more
    # Another user has their own quota.
    await upload(repo, BOB, os.urandom(QUOTA))
    assert len(content_files(repo)) == 4


async def test_check_before_reading(repo: MediaRepository) -> None:
    await repo.check_quota(ALICE, QUOTA)
    with pytest.raises(MatrixError) as e:
        await repo.check_quota(ALICE, QUOTA + 1)
    assert_quota_error(e.value)
    await upload(repo, ALICE, os.urandom(QUOTA - 10))
    await repo.check_quota(ALICE, 10)
    await repo.check_quota(ALICE, None)  # size unknown: refused only when full
    with pytest.raises(MatrixError):
        await repo.check_quota(ALICE, 11)
    await upload(repo, ALICE, os.urandom(10))
    with pytest.raises(MatrixError):
        await repo.check_quota(ALICE, None)
    await repo.check_quota(ALICE, 0)


async def test_no_quota_configured(config: Config, db: Database) -> None:
    repo = MediaRepository(
        db, replace(config, media=replace(config.media, upload_quota_per_user=None))
    )
    for _ in range(3):
        await upload(repo, ALICE, os.urandom(QUOTA))
    await repo.check_quota(ALICE, 10**12)


async def test_the_max_upload_size_still_answers_413(config: Config, db: Database) -> None:
    repo = MediaRepository(
        db, replace(config, media=replace(config.media, upload_quota_per_user=10 * 1024 * 1024))
    )
    e = await refused(repo, ALICE, b"x" * (1024 * 1024 + 1))
    assert (e.status, e.errcode) == (413, "M_TOO_LARGE")


async def test_identical_content_counts_for_every_upload(
    repo: MediaRepository, db: Database
) -> None:
    data = os.urandom(4000)
    await upload(repo, ALICE, data)
    await upload(repo, ALICE, data)
    await upload(repo, BOB, data)
    assert len(content_files(repo)) == 1  # stored once...
    assert (await stored(db, ALICE), await stored(db, BOB)) == (8000, 4000)  # ...charged each time
    assert_quota_error(await refused(repo, ALICE, data))


async def test_uploads_side_by_side_cannot_pass_the_quota_together(
    repo: MediaRepository, db: Database
) -> None:
    """Both pass the check before reading (6000 fit each); the write of the second refuses it."""
    gate = trio.Event()

    async def held(data: bytes) -> AsyncIterator[bytes]:
        yield data[:1000]
        await gate.wait()
        yield data[1000:]

    outcomes: list[object] = []

    async def one(data: bytes) -> None:
        try:
            uri = await repo.upload(ALICE, held(data), content_type="a/b", upload_name=None)
            outcomes.append(uri)
        except MatrixError as e:
            outcomes.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, os.urandom(6000))
        nursery.start_soon(one, os.urandom(6000))
        await trio.sleep(0.1)
        gate.set()
    errors = [o for o in outcomes if isinstance(o, MatrixError)]
    assert len(outcomes) == 2
    assert len(errors) == 1
    assert_quota_error(errors[0])
    assert await stored(db, ALICE) == 6000
    assert len(content_files(repo)) == 1
    assert temp_files(repo) == []


async def test_async_uploads_count_once_uploaded(repo: MediaRepository, db: Database) -> None:
    uri, _ = await repo.create(ALICE)
    media_id = uri.rsplit("/", 1)[1]
    assert await stored(db, ALICE) == 0  # a reservation holds no bytes
    await upload(repo, ALICE, os.urandom(7000))
    with pytest.raises(MatrixError) as e:
        await repo.upload_to(
            ALICE,
            "test.local",
            media_id,
            chunks_of(os.urandom(4000)),
            content_type="a/b",
            upload_name=None,
        )
    assert_quota_error(e.value)
    row = await db.read(media_db.get_media, media_id)
    assert row is not None
    assert row.pending  # still reserved: a smaller upload may follow
    assert temp_files(repo) == []
    await repo.upload_to(
        ALICE, "test.local", media_id, chunks_of(b"y" * 3000), content_type="a/b", upload_name=None
    )
    assert await stored(db, ALICE) == QUOTA


async def test_media_deleted_by_retention_frees_quota(config: Config, db: Database) -> None:
    repo = MediaRepository(
        db, replace(config, media=replace(config.media, local_media_lifetime_ms=1))
    )
    await upload(repo, ALICE, os.urandom(QUOTA))
    assert_quota_error(await refused(repo, ALICE, b"more"))
    await trio.sleep(0.01)
    await repo.sweep()
    assert await stored(db, ALICE) == 0
    await upload(repo, ALICE, os.urandom(QUOTA))


async def test_preview_images_count_and_are_capped(repo: MediaRepository, db: Database) -> None:
    """Images stored for URL previews are stored in the user's name, so they count too."""
    await upload(repo, ALICE, os.urandom(QUOTA - 100))
    with pytest.raises(MatrixError) as e:
        await repo.upload_row(
            ALICE,
            chunks_of(os.urandom(500)),
            content_type="image/png",
            upload_name=None,
            limit=10**6,
        )
    assert_quota_error(e.value)
    _, row = await repo.upload_row(
        ALICE, chunks_of(os.urandom(100)), content_type="image/png", upload_name=None, limit=10**6
    )
    assert row.size == 100


async def test_the_usage_counter_follows_every_change(repo: MediaRepository, db: Database) -> None:
    """media_usage (migration 015's triggers) always equals the sum over local_media."""
    shared = os.urandom(1000)
    a = await upload(repo, ALICE, shared)
    await upload(repo, ALICE, shared)
    b = await upload(repo, BOB, shared)
    uri, _ = await repo.create(ALICE)
    await repo.upload_to(
        ALICE,
        "test.local",
        uri.rsplit("/", 1)[1],
        chunks_of(b"z" * 300),
        content_type="a/b",
        upload_name=None,
    )
    await repo.create(BOB)  # pending: counts nothing
    await repo.delete(a)
    await repo.delete(b)
    for user, expected in ((ALICE, 1300), (BOB, 0), ("@nobody:test.local", 0)):
        assert await stored(db, user) == expected
        assert await db.read(media_db.stored_bytes_counted, user) == expected


def test_migration_counts_existing_media(tmp_path: Path) -> None:
    import sqlite3

    from pocketserver.storage.migrations import apply_migrations, available_migrations

    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrations = available_migrations()
    (usage,) = [m for m in migrations if m.name == "media_usage"]
    apply_migrations(conn, [m for m in migrations if m.number < usage.number])
    conn.executemany(
        "INSERT INTO local_media (media_id, user_id, created_ts, size, sha256)"
        " VALUES (?, ?, 0, ?, ?)",
        [("m1", ALICE, 10, "a" * 64), ("m2", ALICE, 20, "a" * 64), ("m3", BOB, 5, "b" * 64)],
    )
    conn.execute(
        "INSERT INTO local_media (media_id, user_id, created_ts) VALUES ('p', ?, 0)", (BOB,)
    )
    assert apply_migrations(conn, [m for m in migrations if m.number <= usage.number]) == 1
    assert media_db.stored_bytes(conn, ALICE) == 30
    assert media_db.stored_bytes(conn, BOB) == 5
    conn.close()
