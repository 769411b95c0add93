"""The media repository: uploads, async uploads, downloads and thumbnails of local media.

Uploads are streamed into the media store (:mod:`pocketserver.media.store`), the
row is written in the same database write that moves the file into place, and
thumbnails of images are made off the request path by :meth:`MediaRepository.run`
(a bounded queue; a thumbnail asked for before its turn is made on demand).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import trio

from pocketserver.config.model import Config
from pocketserver.config.units import format_size
from pocketserver.core.locality import Locality
from pocketserver.errors import MatrixError
from pocketserver.media import thumbnails as thumbs
from pocketserver.media.headers import base_type
from pocketserver.media.store import MediaStore, ReceivedFile
from pocketserver.storage import media as media_db
from pocketserver.storage.db import Database
from pocketserver.storage.media import MediaRow, RemoteMediaRow, ThumbnailRow

log = logging.getLogger(__name__)

MEDIA_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
MAX_MEDIA_ID_LENGTH = 255
MAX_TIMEOUT_MS = 60_000
DEFAULT_TIMEOUT_MS = 20_000
MAX_DYNAMIC_SIZE = 2000
QUEUE_SIZE = 32
SWEEP_INTERVAL_S = 600.0
RETENTION_BATCH = 100


def now_ms() -> int:
    return int(time.time() * 1000)


def valid_media_id(media_id: str) -> bool:
    return len(media_id) <= MAX_MEDIA_ID_LENGTH and MEDIA_ID_RE.fullmatch(media_id) is not None


def not_found() -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", "media not found")


def quota_exceeded(quota: int, used: int) -> MatrixError:
    """403 ``M_FORBIDDEN``: the upload endpoints' answer for "the user has reached a quota"
    (the PUT endpoint names M_FORBIDDEN; M_USER_LIMIT_EXCEEDED would need an info_uri)."""
    return MatrixError(
        403,
        "M_FORBIDDEN",
        f"media upload quota reached: this upload does not fit in the {format_size(quota)} "
        f"allowed per user ({used} bytes already stored)",
    )


class StoredMedia(Protocol):
    """An uploaded local item or a cached remote one: what serving it needs."""

    @property
    def content_type(self) -> str | None: ...

    @property
    def upload_name(self) -> str | None: ...

    @property
    def size(self) -> int | None: ...

    @property
    def sha256(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Served:
    """A file to send: where it is, its type, size and (for downloads) its name."""

    path: Path
    content_type: str
    size: int
    filename: str | None


class MediaRepository:
    """Local media and the cache of remote media: the only writer of their tables and
    of the media store (fetching remote media is :mod:`pocketserver.media.remote`)."""

    def __init__(self, db: Database, config: Config) -> None:
        self._db = db
        self._config = config
        self._media = config.media
        self.server_name = config.server_name
        self.locality = Locality(config.server_name)
        self.store = MediaStore(config.media_store_path)
        self.pillow = thumbs.pillow_available()
        self._waiters: dict[str, trio.Event] = {}
        self._thumb_limiter = trio.CapacityLimiter(1)
        self._thumb_locks: dict[str, trio.Lock] = {}
        self._queue_in, self._queue_out = trio.open_memory_channel[tuple[str, str]](QUEUE_SIZE)

    # -- uploads ---------------------------------------------------------------

    @property
    def max_image_pixels(self) -> int:
        return self._media.max_image_pixels

    async def upload(
        self,
        user_id: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        upload_name: str | None,
    ) -> str:
        """Store a new upload; return its ``mxc://`` URI.

        Raises:
            MatrixError: 413 ``M_TOO_LARGE`` past ``max_upload_size``.
        """
        uri, _ = await self.upload_row(
            user_id,
            chunks,
            content_type=content_type,
            upload_name=upload_name,
            limit=self._config.max_upload_size,
        )
        return uri

    async def upload_row(
        self,
        user_id: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        upload_name: str | None,
        limit: int,
    ) -> tuple[str, MediaRow]:
        """Store a new upload of at most ``limit`` bytes; return its URI and row.

        Raises:
            MatrixError: 413 ``M_TOO_LARGE`` past ``limit``, 403 ``M_FORBIDDEN`` past
                the user's upload quota.
        """
        received = await self._receive(user_id, chunks, limit)
        media_id = secrets.token_urlsafe(18)
        ts = now_ms()
        row = MediaRow(
            media_id,
            user_id,
            ts,
            None,
            ts,
            content_type,
            upload_name,
            received.size,
            received.sha256,
        )
        try:
            await self._db.write(self._insert_uploaded, row, received)
        except BaseException:
            self.store.discard(received)
            raise
        self._after_upload(received.sha256, content_type)
        return f"mxc://{self.server_name}/{media_id}", row

    def _insert_uploaded(
        self, conn: sqlite3.Connection, row: MediaRow, received: ReceivedFile
    ) -> None:
        self._check_quota_in(conn, row.user_id, received.size)
        media_db.insert_media(conn, row)
        self.store.place(received)

    # -- the upload quota ----------------------------------------------------------
    #
    # media_upload_quota_per_user caps the bytes of media stored in each user's name:
    # every upload counts in full for its uploader even when its content is stored once
    # (charging it to whoever uploaded it first would tell a user whether someone else
    # had uploaded the same file). It is checked before the body is read, caps how much
    # of the body is read, and is checked again in the write that records the upload, so
    # uploads running side by side cannot pass it together.

    async def check_quota(self, user_id: str, size: int | None) -> None:
        """Refuse an upload of ``size`` bytes (unknown: None) before any of it is read.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if it would not fit in the user's quota
                (with ``size`` unknown: if the quota is already full).
        """
        quota = self._media.upload_quota_per_user
        if quota is None:
            return
        used = await self._db.read(media_db.stored_bytes, user_id)
        if used + (1 if size is None else size) > quota:
            raise quota_exceeded(quota, used)

    async def _receive(
        self, user_id: str, chunks: AsyncIterator[bytes], limit: int
    ) -> ReceivedFile:
        """Receive an upload, refused past ``limit`` or past what is left of the quota."""
        quota = self._media.upload_quota_per_user
        if quota is None:
            return await self.store.receive(chunks, limit)
        used = await self._db.read(media_db.stored_bytes, user_id)
        left = max(quota - used, 0)
        if left >= limit:
            return await self.store.receive(chunks, limit)
        return await self.store.receive(chunks, left, refuse=lambda _: quota_exceeded(quota, used))

    def _check_quota_in(self, conn: sqlite3.Connection, user_id: str, size: int) -> None:
        quota = self._media.upload_quota_per_user
        if quota is not None:
            used = media_db.stored_bytes(conn, user_id)
            if used + size > quota:
                raise quota_exceeded(quota, used)

    async def create(self, user_id: str) -> tuple[str, int]:
        """Reserve a media ID for a later upload (``POST /_matrix/media/v1/create``).

        Raises:
            MatrixError: 429 ``M_LIMIT_EXCEEDED`` with ``max_pending_media_uploads``
                unused IDs already reserved.
        """
        ts = now_ms()
        expires = ts + self._media.unused_expiration_time_ms
        media_id = secrets.token_urlsafe(18)
        row = MediaRow(media_id, user_id, ts, expires, None, None, None, None, None)
        await self._db.write(self._insert_pending, row, self._media.max_pending_media_uploads)
        return f"mxc://{self.server_name}/{media_id}", expires

    @staticmethod
    def _insert_pending(conn: sqlite3.Connection, row: MediaRow, limit: int) -> None:
        if media_db.count_pending(conn, row.user_id, row.created_ts) >= limit:
            raise MatrixError(
                429,
                "M_LIMIT_EXCEEDED",
                f"too many pending uploads (at most {limit}); upload to them or wait",
                retry_after_ms=60_000,
            )
        media_db.insert_media(conn, row)

    async def check_upload_to(self, user_id: str, server_name: str, media_id: str) -> None:
        """Refuse an upload to a reserved ID before any of the body is read."""
        row = await self._pending_row(server_name, media_id)
        self._check_pending(row, user_id)

    async def upload_to(
        self,
        user_id: str,
        server_name: str,
        media_id: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        upload_name: str | None,
    ) -> None:
        """Upload the content of an ID reserved with :meth:`create`.

        Raises:
            MatrixError: 404 unknown or expired ID, 403 reserved by someone else or
                past the upload quota, 409 ``M_CANNOT_OVERWRITE_MEDIA`` already
                uploaded, 413 too large.
        """
        await self.check_upload_to(user_id, server_name, media_id)
        received = await self._receive(user_id, chunks, self._config.max_upload_size)
        try:
            await self._db.write(
                self._complete, user_id, media_id, received, content_type, upload_name
            )
        except BaseException:
            self.store.discard(received)
            raise
        event = self._waiters.pop(media_id, None)
        if event is not None:
            event.set()
        self._after_upload(received.sha256, content_type)

    def _complete(
        self,
        conn: sqlite3.Connection,
        user_id: str,
        media_id: str,
        received: ReceivedFile,
        content_type: str,
        upload_name: str | None,
    ) -> None:
        self._check_pending(media_db.get_media(conn, media_id), user_id)
        self._check_quota_in(conn, user_id, received.size)
        media_db.complete_pending(
            conn,
            media_id,
            uploaded_ts=now_ms(),
            content_type=content_type,
            upload_name=upload_name,
            size=received.size,
            sha256=received.sha256,
        )
        self.store.place(received)

    async def _pending_row(self, server_name: str, media_id: str) -> MediaRow | None:
        if not self.locality.is_mine(server_name) or not valid_media_id(media_id):
            return None
        return await self._db.read(media_db.get_media, media_id)

    @staticmethod
    def _check_pending(row: MediaRow | None, user_id: str) -> None:
        if row is None or (row.pending and (row.expires_ts or 0) <= now_ms()):
            raise MatrixError(404, "M_NOT_FOUND", "unknown or expired media ID")
        if row.user_id != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "this media ID was reserved by another user")
        if not row.pending:
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "media already uploaded")

    # -- remote media (the cache; fetched by media/remote.py) ------------------------

    async def get_remote(self, origin: str, media_id: str) -> RemoteMediaRow | None:
        return await self._db.read(media_db.get_remote_media, origin, media_id)

    async def touch_remote(self, origin: str, media_id: str, ts: int) -> None:
        await self._db.write(media_db.touch_remote_media, [(origin, media_id)], ts)

    async def record_remote(
        self,
        origin: str,
        media_id: str,
        received: ReceivedFile,
        *,
        content_type: str,
        upload_name: str | None,
    ) -> RemoteMediaRow:
        """Put a fetched file in the store and record it as ``mxc://origin/media_id``."""
        ts = now_ms()
        row = RemoteMediaRow(
            origin,
            media_id,
            content_type,
            upload_name,
            received.size,
            received.sha256,
            ts,
            ts,
        )
        try:
            await self._db.write(self._insert_remote, row, received)
        except BaseException:
            self.store.discard(received)
            raise
        self._after_upload(received.sha256, content_type)
        cap = self._media.remote_media_cache_size
        if cap is not None:
            await self._db.write(self._shrink_remote_cache, cap, (origin, media_id))
        return row

    def _shrink_remote_cache(
        self, conn: sqlite3.Connection, cap: int, keep: tuple[str, str]
    ) -> None:
        """Drop the least recently asked-for cached items until the cache fits ``cap``
        (never ``keep``, the item just fetched)."""
        excess = media_db.remote_cache_bytes(conn) - cap
        while excess > 0:
            batch = media_db.remote_least_recent(conn, RETENTION_BATCH)
            victims = [b for b in batch if (b[0], b[1]) != keep]
            if not victims:
                return
            for origin, media_id, size in victims:
                self._delete_remote(conn, origin, media_id)
                excess -= size
                if excess <= 0:
                    return

    def _insert_remote(
        self, conn: sqlite3.Connection, row: RemoteMediaRow, received: ReceivedFile
    ) -> None:
        freed = media_db.insert_remote_media(conn, row)
        self.store.place(received)
        if freed is not None:
            self.store.delete_content(freed)

    async def delete_remote(self, origin: str, media_id: str) -> None:
        """Forget one cached remote item (its file too, if nothing else names it)."""
        await self._db.write(self._delete_remote, origin, media_id)

    def _delete_remote(self, conn: sqlite3.Connection, origin: str, media_id: str) -> None:
        sha256 = media_db.delete_remote_media(conn, origin, media_id)
        if sha256 is not None:
            self.store.delete_content(sha256)

    def _after_upload(self, sha256: str, content_type: str) -> None:
        if self.pillow and base_type(content_type) in thumbs.THUMBNAILABLE:
            # When the queue is full they are made on demand when first asked for.
            with contextlib.suppress(trio.WouldBlock):
                self._queue_in.send_nowait((sha256, base_type(content_type)))

    # -- downloads ---------------------------------------------------------------

    async def get_local(self, server_name: str, media_id: str, timeout_ms: int) -> MediaRow:
        """The uploaded media, waiting up to ``timeout_ms`` for a pending upload.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` (also for other servers' media, until
                federation), 504 ``M_NOT_YET_UPLOADED`` if still pending.
        """
        if not self.locality.is_mine(server_name) or not valid_media_id(media_id):
            raise not_found()
        row = await self._db.read(media_db.get_media, media_id)
        if row is None:
            raise not_found()
        if row.pending:
            if (row.expires_ts or 0) <= now_ms():
                raise not_found()
            event = self._waiters.setdefault(media_id, trio.Event())
            with trio.move_on_after(min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000):
                await event.wait()
            row = await self._db.read(media_db.get_media, media_id)
            if row is None:
                raise not_found()
            if row.pending:
                raise MatrixError(504, "M_NOT_YET_UPLOADED", "content has not yet been uploaded")
        return row

    def served_original(self, row: StoredMedia, filename: str | None = None) -> Served:
        assert row.sha256 is not None
        assert row.size is not None
        return Served(
            self.store.content_path(row.sha256),
            row.content_type or "application/octet-stream",
            row.size,
            filename if filename is not None else row.upload_name,
        )

    # -- thumbnails --------------------------------------------------------------

    async def thumbnail(
        self, row: StoredMedia, width: int, height: int, method: str, animated: bool
    ) -> Served:
        """The best thumbnail for a (width, height, method) request, or the original.

        Raises:
            MatrixError: 400 ``M_UNKNOWN`` if the content cannot be thumbnailed,
                413 ``M_TOO_LARGE`` if it has more than ``max_image_pixels``.
        """
        assert row.sha256 is not None
        ctype = base_type(row.content_type or "")
        if ctype not in thumbs.THUMBNAILABLE:
            raise MatrixError(400, "M_UNKNOWN", "cannot generate thumbnails for this content")
        original = self.served_original(row)
        if not self.pillow:
            # Without Pillow the image itself is the "thumbnail": never smaller than asked.
            return original
        info = await self._probe(original.path)
        if info.width <= width and info.height <= height:
            return original
        if animated and info.animated:
            return original
        available = await self._db.read(media_db.thumbnails, row.sha256)
        if not available:
            await self._make_thumbnails(row.sha256, ctype, list(self._media.thumbnail_sizes))
            available = await self._db.read(media_db.thumbnails, row.sha256)
        dynamic = self._media.dynamic_thumbnails
        best = choose_thumbnail(available, width, height, method, same_method=dynamic)
        if best is None and dynamic:
            size = (min(width, MAX_DYNAMIC_SIZE), min(height, MAX_DYNAMIC_SIZE), method)
            await self._make_thumbnails(row.sha256, ctype, [size])
            available = await self._db.read(media_db.thumbnails, row.sha256)
            best = choose_thumbnail(available, width, height, method)
        if best is None:
            return original
        path = self.store.thumbnail_path(
            best.sha256, best.width, best.height, best.method, best.content_type
        )
        return Served(path, best.content_type, best.size, None)

    async def _probe(self, path: Path) -> thumbs.ImageInfo:
        try:
            return await trio.to_thread.run_sync(thumbs.probe, path, self._media.max_image_pixels)
        except thumbs.ImageTooLarge as e:
            raise MatrixError(413, "M_TOO_LARGE", str(e)) from None
        except thumbs.ThumbnailError as e:
            raise MatrixError(400, "M_UNKNOWN", str(e)) from None

    async def _make_thumbnails(
        self, sha256: str, ctype: str, sizes: list[tuple[int, int, str]]
    ) -> None:
        lock = self._thumb_locks.setdefault(sha256, trio.Lock())
        try:
            async with lock:
                existing = await self._db.read(media_db.thumbnails, sha256)
                have = {(t.width, t.height, t.method) for t in existing}
                wanted = [s for s in sizes if s not in have]
                if not wanted:
                    return
                path = self.store.content_path(sha256)
                try:
                    made = await trio.to_thread.run_sync(
                        thumbs.generate,
                        path,
                        ctype,
                        wanted,
                        self._media.max_image_pixels,
                        limiter=self._thumb_limiter,
                    )
                except thumbs.ImageTooLarge as e:
                    raise MatrixError(413, "M_TOO_LARGE", str(e)) from None
                except thumbs.ThumbnailError as e:
                    raise MatrixError(400, "M_UNKNOWN", str(e)) from None
                await self._db.write(self._store_thumbnails, sha256, made)
        finally:
            if not lock.statistics().tasks_waiting and not lock.locked():
                self._thumb_locks.pop(sha256, None)

    def _store_thumbnails(
        self, conn: sqlite3.Connection, sha256: str, made: list[thumbs.Thumbnail]
    ) -> None:
        if not media_db.content_in_use(conn, sha256):
            return  # deleted meanwhile
        for t in made:
            path = self.store.thumbnail_path(sha256, t.width, t.height, t.method, t.content_type)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_bytes(t.data)
            tmp.replace(path)
            media_db.insert_thumbnail(
                conn,
                ThumbnailRow(sha256, t.width, t.height, t.method, t.content_type, len(t.data)),
            )

    # -- background --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Make thumbnails of new uploads; expire unused reservations and old media."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._thumbnail_worker)
            task_status.started()
            while True:
                try:
                    await self.sweep()
                except Exception:
                    log.exception("media sweep failed")
                await trio.sleep(SWEEP_INTERVAL_S)

    async def _thumbnail_worker(self) -> None:
        async for sha256, ctype in self._queue_out:
            try:
                await self._make_thumbnails(sha256, ctype, list(self._media.thumbnail_sizes))
            except MatrixError as e:
                log.info("no thumbnails for %s: %s", sha256, e.error)
            except Exception:
                log.exception("thumbnailing %s failed", sha256)

    async def sweep(self) -> None:
        """Delete expired reservations and, with ``media_retention``, old uploads and
        cached remote media not asked for in ``remote_media_lifetime``."""
        ts = now_ms()
        remote_lifetime = self._media.remote_media_lifetime_ms
        if remote_lifetime is not None:
            while True:
                stale = await self._db.read(
                    media_db.remote_accessed_before, ts - remote_lifetime, RETENTION_BATCH
                )
                for origin, media_id in stale:
                    await self.delete_remote(origin, media_id)
                if len(stale) < RETENTION_BATCH:
                    break
        await self._db.write(media_db.delete_expired_pending, ts)
        for media_id in list(self._waiters):
            row = await self._db.read(media_db.get_media, media_id)
            if row is None or not row.pending:
                self._waiters.pop(media_id).set()
        lifetime = self._media.local_media_lifetime_ms
        if lifetime is None:
            return
        while True:
            old = await self._db.read(media_db.uploaded_before, ts - lifetime, RETENTION_BATCH)
            for media_id in old:
                await self.delete(media_id)
            if len(old) < RETENTION_BATCH:
                return

    async def delete(self, media_id: str) -> None:
        """Delete one local media item (its file too, if no other media shares it)."""
        await self._db.write(self._delete, media_id)

    def _delete(self, conn: sqlite3.Connection, media_id: str) -> None:
        sha256 = media_db.delete_media(conn, media_id)
        if sha256 is not None:
            self.store.delete_content(sha256)


def choose_thumbnail(
    available: list[ThumbnailRow],
    width: int,
    height: int,
    method: str,
    *,
    same_method: bool = False,
) -> ThumbnailRow | None:
    """The smallest thumbnail whose box covers the request, preferring the same method
    (or only the same method: with dynamic thumbnails the exact one can be made)."""
    big_enough = [
        t
        for t in available
        if t.width >= width and t.height >= height and (t.method == method or not same_method)
    ]
    if not big_enough:
        return None
    return min(big_enough, key=lambda t: (t.method != method, t.width * t.height, t.size))


async def open_repository(db: Database, config: Config) -> MediaRepository:
    """Build the repository (creating the media store directories in a thread)."""
    return await trio.to_thread.run_sync(partial(MediaRepository, db, config))
