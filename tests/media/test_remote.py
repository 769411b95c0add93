"""Other servers' media in process: fetched once however many ask, cached, capped,
refused when malformed, purged by media_retention.remote_media_lifetime.

The origin is a fake of the federation client's ``stream`` (status, headers, body
chunks as they would come off the wire); the repository, database and media store
are the real ones."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import trio

from pocketserver.config import load_config
from pocketserver.config.model import Config
from pocketserver.errors import MatrixError
from pocketserver.federation.errors import (
    FederationBlocked,
    FederationHttpError,
    FederationResponseTooLarge,
    FederationUnreachable,
)
from pocketserver.media.multipart import multipart_content_type, write_head, write_tail
from pocketserver.media.remote import RemoteMediaFetcher, filename_from_disposition
from pocketserver.media.repository import MediaRepository
from pocketserver.storage import media as media_db
from pocketserver.storage.db import Database
from tests.harness import make_config

ORIGIN = "other.example"
LIMIT = 64 * 1024


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    chunks: list[bytes] | Callable[[], AsyncIterator[bytes]]
    max_size: int = 0
    read: int = 0

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        source = self.chunks() if callable(self.chunks) else _each(self.chunks)
        async with aclosing(source) as chunks:
            async for chunk in chunks:
                self.read += len(chunk)
                if self.read > self.max_size:  # as FederationResponse.aiter_bytes
                    raise FederationResponseTooLarge(ORIGIN, "too long")
                yield chunk


async def _each(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await trio.lowlevel.checkpoint()
        yield chunk


def multipart(data: bytes, ctype: str = "image/png", disposition: str | None = None) -> Answer:
    body = write_head("bnd", ctype, disposition) + data + write_tail("bnd")
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    return Answer(200, {"content-type": multipart_content_type("bnd")}, chunks)


@dataclass
class FakeOrigin:
    """Answers by path; ``gate`` holds answers until set; records every request."""

    answers: dict[str, Answer | Exception] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    gate: trio.Event | None = None

    @asynccontextmanager
    async def stream(
        self, method: str, destination: str, path: str, **kwargs: Any
    ) -> AsyncIterator[Answer]:
        self.requests.append((destination, path.split("?")[0], kwargs))
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.get(path.split("/download/", 1)[0] + "/download")
        if answer is None:
            raise FederationHttpError(destination, 404, "M_NOT_FOUND", "no", None)
        if isinstance(answer, Exception):
            raise answer
        answer.max_size = kwargs["max_size"]
        yield answer


FED = "/_matrix/federation/v1/media/download"
LEGACY = "/_matrix/media/v3/download"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(make_config(tmp_path, max_upload_size=LIMIT))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "m.db", memory_bytes=4 * 1024 * 1024)
    yield database
    database.close()


@pytest.fixture
def repo(db: Database, config: Config) -> MediaRepository:
    return MediaRepository(db, config)


@pytest.fixture
def origin() -> FakeOrigin:
    return FakeOrigin()


@pytest.fixture
def fetcher(repo: MediaRepository, origin: FakeOrigin, config: Config) -> RemoteMediaFetcher:
    return RemoteMediaFetcher(repo, origin, config)


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not condition():  # noqa: ASYNC110 (polling state that has no event)
            await trio.sleep(0.01)


def stored_files(repo: MediaRepository) -> list[Path]:
    return sorted(p for p in repo.store.root.rglob("*") if p.is_file())


async def test_fetched_once_then_served_from_the_cache(
    fetcher: RemoteMediaFetcher, origin: FakeOrigin, repo: MediaRepository
) -> None:
    data = b"\x89PNG" + bytes(range(256)) * 40
    origin.answers[FED] = multipart(data, "image/png", "inline; filename*=utf-8''caf%C3%A9.png")
    row = await fetcher.get(ORIGIN, "abc", 5000)
    assert (row.origin, row.media_id, row.size) == (ORIGIN, "abc", len(data))
    assert row.content_type == "image/png"
    assert row.upload_name == "café.png"
    assert repo.served_original(row).path.read_bytes() == data
    assert origin.requests == [
        (
            ORIGIN,
            f"{FED}/abc",
            {"query": {"timeout_ms": "5000"}, "timeout_s": 125.0, "max_size": LIMIT + 128 * 1024},
        )
    ]
    again = await fetcher.get(ORIGIN, "abc", 5000)
    assert again == row
    assert len(origin.requests) == 1


async def test_concurrent_requests_share_one_download(
    fetcher: RemoteMediaFetcher, origin: FakeOrigin
) -> None:
    origin.answers[FED] = multipart(b"shared bytes")
    origin.gate = trio.Event()
    rows: list[object] = []

    async def ask() -> None:
        rows.append(await fetcher.get(ORIGIN, "same", 1000))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(ask)
        await until(lambda: fetcher.statistics().waiting == 4)
        assert fetcher.statistics().downloads == 1
        origin.gate.set()
    assert len(origin.requests) == 1
    assert len(rows) == 5
    assert all(r == rows[0] for r in rows)
    assert fetcher.statistics().downloads == 0


async def test_waiters_share_the_failure_and_a_later_request_tries_again(
    fetcher: RemoteMediaFetcher, origin: FakeOrigin
) -> None:
    origin.answers[FED] = FederationUnreachable(ORIGIN, "connection refused")
    origin.gate = trio.Event()
    errors: list[MatrixError] = []

    async def ask() -> None:
        with pytest.raises(MatrixError) as e:
            await fetcher.get(ORIGIN, "down", 1000)
        errors.append(e.value)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(ask)
        await until(lambda: fetcher.statistics().waiting == 2)
        origin.gate.set()
    assert [(e.status, e.errcode) for e in errors] == [(502, "M_UNKNOWN")] * 3
    assert len(origin.requests) == 1
    origin.answers[FED] = multipart(b"back up")
    assert (await fetcher.get(ORIGIN, "down", 1000)).size == 7
    assert len(origin.requests) == 2


async def test_a_cancelled_download_lets_a_waiter_fetch(
    fetcher: RemoteMediaFetcher, origin: FakeOrigin
) -> None:
    origin.answers[FED] = multipart(b"eventually")
    origin.gate = trio.Event()
    got: list[int] = []
    async with trio.open_nursery() as nursery:
        leader = trio.CancelScope()

        async def first() -> None:
            with leader:
                await fetcher.get(ORIGIN, "x", 1000)

        async def second() -> None:
            got.append((await fetcher.get(ORIGIN, "x", 1000)).size)

        nursery.start_soon(first)
        await until(lambda: fetcher.statistics().downloads == 1)
        nursery.start_soon(second)
        await until(lambda: fetcher.statistics().waiting == 1)
        leader.cancel()
        await until(lambda: len(origin.requests) == 2)
        origin.gate.set()
    assert got == [10]
    assert len(origin.requests) == 2


@pytest.mark.parametrize(
    ("failure", "status", "errcode"),
    [
        (FederationHttpError(ORIGIN, 404, "M_NOT_FOUND", "nope", None), 404, "M_NOT_FOUND"),
        (FederationHttpError(ORIGIN, 500, "M_UNKNOWN", "boom", None), 502, "M_UNKNOWN"),
        (FederationHttpError(ORIGIN, 403, "M_FORBIDDEN", "no", None), 502, "M_UNKNOWN"),
        (
            FederationHttpError(ORIGIN, 504, "M_NOT_YET_UPLOADED", "wait", None),
            504,
            "M_NOT_YET_UPLOADED",
        ),
        (FederationHttpError(ORIGIN, 504, None, None, None), 502, "M_UNKNOWN"),
        (FederationUnreachable(ORIGIN, "refused"), 502, "M_UNKNOWN"),
        (FederationBlocked(ORIGIN, "ip_range_blacklist"), 502, "M_UNKNOWN"),
        (FederationResponseTooLarge(ORIGIN, "Content-Length"), 502, "M_TOO_LARGE"),
    ],
)
async def test_failures_map_as_synapse_does(
    fetcher: RemoteMediaFetcher,
    origin: FakeOrigin,
    repo: MediaRepository,
    failure: Exception,
    status: int,
    errcode: str,
) -> None:
    origin.answers[FED] = failure
    with pytest.raises(MatrixError) as e:
        await fetcher.get(ORIGIN, "m", 1000)
    assert (e.value.status, e.value.errcode) == (status, errcode)
    assert await repo.get_remote(ORIGIN, "m") is None
    assert stored_files(repo) == []


async def test_a_huge_body_is_cut_at_the_cap_and_nothing_is_kept(
    fetcher: RemoteMediaFetcher, origin: FakeOrigin, repo: MediaRepository
) -> None:
    async def endless() -> AsyncIterator[bytes]:
        yield write_head("bnd", "application/octet-stream", None)
        while True:
            await trio.lowlevel.checkpoint()
            yield b"\0" * 8192

    answer = Answer(200, {"content-type": multipart_content_type("bnd")}, endless)
    origin.answers[FED] = answer
    with pytest.raises(MatrixError) as e:
        await fetcher.get(ORIGIN, "huge", 1000)
    assert (e.value.status, e.value.errcode) == (502, "M_TOO_LARGE")
    assert answer.read <= LIMIT + 2 * 8192 + 1024  # stopped reading at the cap
    assert await repo.get_remote(ORIGIN, "huge") is None
    assert stored_files(repo) == []


async def test_a_legacy_answer_past_the_cap_is_refused(
    fetcher: RemoteMediaFetcher, origin: FakeOrigin, repo: MediaRepository
) -> None:
    origin.answers[FED] = FederationHttpError(ORIGIN, 404, "M_UNRECOGNIZED", "?", None)
    origin.answers[LEGACY] = Answer(200, {"content-type": "text/plain"}, [b"x" * 4096] * 100)
    with pytest.raises(MatrixError) as e:
        await fetcher.get(ORIGIN, "big", 1000)
    assert (e.value.status, e.value.errcode) == (502, "M_TOO_LARGE")
    assert stored_files(repo) == []


@pytest.mark.parametrize(
    "body",
    [
        b"not multipart at all",
        write_head("bnd", "text/plain", None) + b"truncated before the close delimiter",
        b"--bnd\r\nContent-Type: text/plain\r\n\r\n{}\r\n--bnd\r\n\r\nx\r\n--bnd--\r\n",
        b"\r\n--bnd\r\nContent-Type: application/json\r\n\r\n{}\r\n--bnd\r\n"
        b"Location: http://127.0.0.1/internal\r\n\r\n\r\n--bnd--\r\n",
    ],
)
async def test_malformed_answers_are_502_and_not_cached(
    fetcher: RemoteMediaFetcher, origin: FakeOrigin, repo: MediaRepository, body: bytes
) -> None:
    origin.answers[FED] = Answer(200, {"content-type": multipart_content_type("bnd")}, [body])
    with pytest.raises(MatrixError) as e:
        await fetcher.get(ORIGIN, "bad", 1000)
    assert (e.value.status, e.value.errcode) == (502, "M_UNKNOWN")
    assert await repo.get_remote(ORIGIN, "bad") is None
    assert stored_files(repo) == []


async def test_a_wrong_content_type_is_502(fetcher: RemoteMediaFetcher, origin: FakeOrigin) -> None:
    origin.answers[FED] = Answer(200, {"content-type": "image/png"}, [b"raw bytes"])
    with pytest.raises(MatrixError) as e:
        await fetcher.get(ORIGIN, "raw", 1000)
    assert e.value.status == 502


@pytest.mark.parametrize(
    "failure",
    [
        FederationHttpError(ORIGIN, 404, "M_UNRECOGNIZED", "Unrecognized request", None),
        FederationHttpError(ORIGIN, 400, "M_UNRECOGNIZED", "Unrecognized request", None),
        FederationHttpError(ORIGIN, 404, None, None, None),
    ],
)
async def test_servers_without_the_federation_endpoint_are_asked_the_old_way(
    fetcher: RemoteMediaFetcher, origin: FakeOrigin, failure: Exception
) -> None:
    origin.answers[FED] = failure
    origin.answers[LEGACY] = Answer(
        200,
        {"Content-Type": "text/plain", "Content-Disposition": 'attachment; filename="notes.txt"'},
        [b"old ", b"style"],
    )
    row = await fetcher.get(ORIGIN, "old", 3000)
    assert (row.content_type, row.upload_name, row.size) == ("text/plain", "notes.txt", 9)
    assert [r[1] for r in origin.requests] == [f"{FED}/old", f"{LEGACY}/{ORIGIN}/old"]
    assert origin.requests[1][2]["query"] == {"allow_remote": "false", "timeout_ms": "3000"}


async def test_a_plain_404_with_errcode_is_not_found_without_fallback(
    fetcher: RemoteMediaFetcher, origin: FakeOrigin
) -> None:
    with pytest.raises(MatrixError) as e:
        await fetcher.get(ORIGIN, "unknown", 1000)
    assert (e.value.status, e.value.errcode) == (404, "M_NOT_FOUND")
    assert len(origin.requests) == 1


async def test_refused_before_any_request(
    repo: MediaRepository, origin: FakeOrigin, config: Config
) -> None:
    fetcher = RemoteMediaFetcher(
        repo, origin, replace(config, federation_domain_whitelist=frozenset({"friend.example"}))
    )
    with pytest.raises(MatrixError) as e:
        await fetcher.get(ORIGIN, "m", 1000)
    assert (e.value.status, e.value.errcode) == (403, "M_FORBIDDEN")
    for media_id in ("", "a/b", "x" * 300, "sp ace"):
        with pytest.raises(MatrixError) as e:
            await fetcher.get(ORIGIN, media_id, 1000)
        assert e.value.status == 404
    with pytest.raises(MatrixError) as e:  # our own name: local media, never fetched
        await fetcher.get(config.server_name, "m", 1000)
    assert e.value.status == 404
    with pytest.raises(MatrixError):
        await RemoteMediaFetcher(repo, origin, config).get(ORIGIN, "m", 1000, fetch=False)
    assert origin.requests == []


async def test_remote_media_lifetime_purges_what_was_not_asked_for(
    db: Database, config: Config, origin: FakeOrigin
) -> None:
    config = replace(config, media=replace(config.media, remote_media_lifetime_ms=60_000))
    repo = MediaRepository(db, config)
    fetcher = RemoteMediaFetcher(repo, origin, config)
    origin.answers[FED] = multipart(b"old news")
    await fetcher.get(ORIGIN, "old", 1000)
    origin.answers[FED] = multipart(b"fresh")
    await fetcher.get(ORIGIN, "fresh", 1000)
    # A local upload of the same bytes as the old item keeps the shared file.
    uri = await repo.upload(
        "@a:test.local", _each([b"old news"]), content_type="text/plain", upload_name=None
    )

    def age(conn: Any) -> None:
        conn.execute("UPDATE remote_media SET last_access_ts = 0 WHERE media_id = 'old'")

    await db.write(age)
    await repo.sweep()
    assert await repo.get_remote(ORIGIN, "old") is None
    assert await repo.get_remote(ORIGIN, "fresh") is not None
    row = await repo.get_local("test.local", uri.rsplit("/", 1)[1], 0)
    assert repo.served_original(row).path.read_bytes() == b"old news"
    # Once the upload goes too, the file goes.
    await repo.delete(uri.rsplit("/", 1)[1])
    assert not repo.served_original(row).path.exists()
    # Asked for again: fetched again.
    origin.answers[FED] = multipart(b"old news")
    await fetcher.get(ORIGIN, "old", 1000)
    assert len(origin.requests) == 3


async def test_remote_thumbnails_are_made_here(
    fetcher: RemoteMediaFetcher, origin: FakeOrigin, repo: MediaRepository
) -> None:
    image = pytest.importorskip("PIL.Image")
    buf = io.BytesIO()
    image.new("RGB", (400, 300), "teal").save(buf, "PNG")
    origin.answers[FED] = multipart(buf.getvalue(), "image/png")
    row = await fetcher.get(ORIGIN, "pic", 1000)
    served = await repo.thumbnail(row, 32, 32, "crop", False)
    with image.open(served.path) as thumb:
        assert thumb.size == (32, 32)
    assert await repo._db.read(media_db.thumbnails, row.sha256)


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("inline; filename=a.png", "a.png"),
        ('attachment; filename="two words.txt"', "two words.txt"),
        ("attachment; filename=x; filename*=utf-8''%E2%9C%93.txt", "✓.txt"),
        ("attachment", None),
        (None, None),
        ('attachment; filename="bad\x01"', None),
    ],
)
def test_filename_from_disposition(header: str | None, name: str | None) -> None:
    assert filename_from_disposition(header) == name


async def test_the_cache_is_capped_least_recently_asked_for_first(
    db: Database, config: Config, origin: FakeOrigin
) -> None:
    config = replace(config, media=replace(config.media, remote_media_cache_size=25_000))
    repo = MediaRepository(db, config)
    fetcher = RemoteMediaFetcher(repo, origin, config)
    for i, name in enumerate(("a", "b", "c")):
        origin.answers[FED] = multipart(bytes([i]) * 10_000)
        await fetcher.get(ORIGIN, name, 1000)

        def age(conn: Any, name: str = name, ts: int = i) -> None:
            conn.execute(
                "UPDATE remote_media SET last_access_ts = ? WHERE media_id = ?", (ts, name)
            )

        await db.write(age)
    # 30 000 bytes fetched, 25 000 allowed: "a", the least recently asked for, went.
    assert await repo.get_remote(ORIGIN, "a") is None
    assert await repo.get_remote(ORIGIN, "b") is not None
    assert await repo.get_remote(ORIGIN, "c") is not None
    assert await db.read(media_db.remote_cache_bytes) == 20_000
    assert len(stored_files(repo)) == 2
    # An item bigger than the whole cap is still served (alone).
    small = replace(config, media=replace(config.media, remote_media_cache_size=5_000))
    repo2 = MediaRepository(db, small)
    origin.answers[FED] = multipart(b"\xff" * 9_000)
    row = await RemoteMediaFetcher(repo2, origin, small).get(ORIGIN, "d", 1000)
    assert repo2.served_original(row).path.read_bytes() == b"\xff" * 9_000
    assert await db.read(media_db.remote_cache_bytes) == 9_000
