"""The media repository in-process: no-Pillow behaviour, thumbnails, expiry and retention."""

from __future__ import annotations

import io
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from pocketserver.config import load_config
from pocketserver.config.model import Config
from pocketserver.errors import MatrixError
from pocketserver.media import thumbnails as thumbs
from pocketserver.media.repository import MediaRepository, choose_thumbnail
from pocketserver.media.store import MediaStore
from pocketserver.storage import media as media_db
from pocketserver.storage.db import Database
from pocketserver.storage.media import ThumbnailRow
from tests.harness import make_config

Image = pytest.importorskip("PIL.Image")

USER = "@alice:test.local"


async def chunks_of(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await trio.lowlevel.checkpoint()
        yield data[i : i + size]


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "teal").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(make_config(tmp_path, max_upload_size="1M"))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "m.db", memory_bytes=4 * 1024 * 1024)
    yield database
    database.close()


def content_files(repo: MediaRepository) -> list[Path]:
    return sorted(p for p in (repo.store.root / "content").rglob("*") if p.is_file())


async def test_without_pillow_images_are_served_whole(
    config: Config, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = png((500, 500))
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    assert not thumbs.pillow_available()
    repo = MediaRepository(db, config)
    assert not repo.pillow
    uri = await repo.upload(USER, chunks_of(data), content_type="image/png", upload_name=None)
    row = await repo.get_local("test.local", uri.rsplit("/", 1)[1], 0)
    served = await repo.thumbnail(row, 32, 32, "crop", False)
    assert served.path.read_bytes() == data
    assert served.content_type == "image/png"
    uri = await repo.upload(
        USER, chunks_of(b"%PDF"), content_type="application/pdf", upload_name=None
    )
    row = await repo.get_local("test.local", uri.rsplit("/", 1)[1], 0)
    with pytest.raises(MatrixError) as e:
        await repo.thumbnail(row, 32, 32, "crop", False)
    assert (e.value.status, e.value.errcode) == (400, "M_UNKNOWN")


async def test_upload_limit_keeps_nothing(config: Config, db: Database) -> None:
    repo = MediaRepository(db, config)
    with pytest.raises(MatrixError) as e:
        await repo.upload(
            USER,
            chunks_of(b"x" * (1024 * 1024 + 1), 64 * 1024),
            content_type="a/b",
            upload_name=None,
        )
    assert (e.value.status, e.value.errcode) == (413, "M_TOO_LARGE")
    assert list((repo.store.root / "tmp").iterdir()) == []
    assert content_files(repo) == []
    # Exactly the limit is fine.
    await repo.upload(
        USER, chunks_of(b"x" * 1024 * 1024, 64 * 1024), content_type="a/b", upload_name=None
    )
    assert len(content_files(repo)) == 1


async def test_thumbnails_made_in_the_background(config: Config, db: Database) -> None:
    repo = MediaRepository(db, config)
    async with trio.open_nursery() as nursery:
        await nursery.start(repo.run)
        uri = await repo.upload(
            USER, chunks_of(png((900, 700))), content_type="image/png", upload_name=None
        )
        row = await repo.get_local("test.local", uri.rsplit("/", 1)[1], 0)
        assert row.sha256 is not None
        with trio.fail_after(20):
            while len(await db.read(media_db.thumbnails, row.sha256)) < 5:  # noqa: ASYNC110
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    made = await db.read(media_db.thumbnails, row.sha256)
    assert {(t.width, t.height, t.method) for t in made} == set(config.media.thumbnail_sizes)
    for t in made:
        path = repo.store.thumbnail_path(t.sha256, t.width, t.height, t.method, t.content_type)
        assert path.stat().st_size == t.size


async def test_dynamic_thumbnails(config: Config, db: Database) -> None:
    config = replace(config, media=replace(config.media, dynamic_thumbnails=True))
    repo = MediaRepository(db, config)
    uri = await repo.upload(
        USER, chunks_of(png((1600, 1200))), content_type="image/png", upload_name=None
    )
    row = await repo.get_local("test.local", uri.rsplit("/", 1)[1], 0)
    for method, expected in (("crop", (1000, 900)), ("scale", (1000, 750))):
        served = await repo.thumbnail(row, 1000, 900, method, False)
        with Image.open(served.path) as im:
            assert im.size == expected


async def test_expired_reservations_and_retention(config: Config, db: Database) -> None:
    config = replace(
        config,
        media=replace(config.media, unused_expiration_time_ms=1, local_media_lifetime_ms=1),
    )
    repo = MediaRepository(db, config)
    uri, _ = await repo.create(USER)
    media_id = uri.rsplit("/", 1)[1]
    await trio.sleep(0.01)
    with pytest.raises(MatrixError) as e:
        await repo.get_local("test.local", media_id, 0)
    assert e.value.status == 404
    with pytest.raises(MatrixError) as e:
        await repo.upload_to(
            USER, "test.local", media_id, chunks_of(b"late"), content_type="a/b", upload_name=None
        )
    assert e.value.status == 404
    a = await repo.upload(USER, chunks_of(b"shared"), content_type="a/b", upload_name=None)
    await trio.sleep(0.01)
    await repo.sweep()
    assert await db.read(media_db.get_media, media_id) is None
    assert await db.read(media_db.get_media, a.rsplit("/", 1)[1]) is None
    assert content_files(repo) == []


async def test_shared_content_survives_one_deletion(config: Config, db: Database) -> None:
    repo = MediaRepository(db, config)
    a = await repo.upload(USER, chunks_of(b"same"), content_type="a/b", upload_name=None)
    b = await repo.upload(USER, chunks_of(b"same"), content_type="a/b", upload_name=None)
    assert len(content_files(repo)) == 1
    await repo.delete(a.rsplit("/", 1)[1])
    assert len(content_files(repo)) == 1
    await repo.delete(b.rsplit("/", 1)[1])
    assert content_files(repo) == []


def test_choose_thumbnail() -> None:
    def t(w: int, h: int, m: str) -> ThumbnailRow:
        return ThumbnailRow("a" * 64, w, h, m, "image/png", w * h)

    available = [t(32, 32, "crop"), t(96, 96, "crop"), t(320, 240, "scale"), t(640, 480, "scale")]
    assert choose_thumbnail(available, 30, 30, "crop") == available[0]
    assert choose_thumbnail(available, 33, 33, "crop") == available[1]
    assert choose_thumbnail(available, 96, 96, "scale") == available[2]
    assert choose_thumbnail(available, 100, 100, "crop") == available[2]
    assert choose_thumbnail(available, 641, 10, "scale") is None


def test_generate_never_upscales_and_keeps_aspect(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    path.write_bytes(png((400, 100)))
    made = thumbs.generate(
        path, "image/png", [(32, 32, "crop"), (320, 240, "scale"), (800, 600, "scale")], 10**7
    )
    sizes = {}
    for t in made:
        with Image.open(io.BytesIO(t.data)) as im:
            sizes[(t.width, t.height, t.method)] = im.size
    assert sizes == {(32, 32, "crop"): (32, 32), (320, 240, "scale"): (320, 80)}


def test_bomb_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (3000, 3000)).save(path, "PNG")
    with pytest.raises(thumbs.ImageTooLarge):
        thumbs.probe(path, 1_000_000)
    with pytest.raises(thumbs.ImageTooLarge):
        thumbs.generate(path, "image/png", [(32, 32, "crop")], 1_000_000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(thumbs.ThumbnailError):
        thumbs.probe(path, 1_000_000)


def test_store_refuses_bad_digests(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    for bad in ("../../etc/passwd", "a" * 63, "A" * 64, "g" * 64):
        with pytest.raises(ValueError, match="SHA-256"):
            store.content_path(bad)
    with pytest.raises(ValueError, match="method"):
        store.thumbnail_path("a" * 64, 1, 1, "../x", "image/png")
