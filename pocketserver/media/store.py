"""Files of the media repository, named by their SHA-256 (identical uploads stored once).

Layout under ``media_store_path``::

    content/ab/cd/abcd...        the bytes of an upload (its SHA-256 in hex)
    thumbnails/ab/cd/abcd.../    thumbnails of that content, ``WxH-method.ext``
    tmp/                         uploads being received (same filesystem: renames are atomic)

Media IDs and file names never become paths: only hex digests and numbers do.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from pocketserver.errors import MatrixError

if TYPE_CHECKING:
    from hashlib import _Hash

CHUNK = 128 * 1024
"""Bytes buffered per upload before a write, and per read of a download."""

DRAIN_EXTRA = 4 * 1024 * 1024
"""How much more than the limit a refused upload is read, so that the client sees the 413."""

_THUMB_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """An upload fully received into ``tmp/``, not yet in the store."""

    temp_path: Path
    size: int
    sha256: str


class MediaStore:
    """The media store directory: receive uploads, place and stream content."""

    def __init__(self, root: Path) -> None:
        """Create the directories and remove uploads a previous run left half-received.

        Blocking: call from a thread or at start-up.
        """
        self.root = root
        self._tmp = root / "tmp"
        for sub in ("content", "thumbnails", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def content_path(self, sha256: str) -> Path:
        _check_digest(sha256)
        return self.root / "content" / sha256[:2] / sha256[2:4] / sha256

    def thumbnail_dir(self, sha256: str) -> Path:
        _check_digest(sha256)
        return self.root / "thumbnails" / sha256[:2] / sha256[2:4] / sha256

    def thumbnail_path(self, sha256: str, width: int, height: int, method: str, ctype: str) -> Path:
        if method not in ("crop", "scale"):
            raise ValueError(f"bad thumbnail method {method!r}")
        name = f"{int(width)}x{int(height)}-{method}.{_THUMB_EXT.get(ctype, 'bin')}"
        return self.thumbnail_dir(sha256) / name

    async def receive(
        self,
        chunks: AsyncIterator[bytes],
        limit: int,
        *,
        refuse: Callable[[int], MatrixError] | None = None,
    ) -> ReceivedFile:
        """Write ``chunks`` to a temporary file, hashing as they come.

        Raises:
            MatrixError: past ``limit`` bytes, ``refuse(limit)`` if given, else 413
                ``M_TOO_LARGE`` (nothing is kept either way).
        """
        temp_path = self._tmp / secrets.token_hex(16)
        f = await trio.to_thread.run_sync(_open_new, temp_path)
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    await _drain(chunks, size, limit + DRAIN_EXTRA)
                    raise (refuse or too_large)(limit)
                buffer += chunk
                if len(buffer) >= CHUNK:
                    data = bytes(buffer)
                    buffer.clear()
                    await trio.to_thread.run_sync(_write, f, digest, data)
            await trio.to_thread.run_sync(_finish, f, digest, bytes(buffer))
        except BaseException:
            f.close()
            temp_path.unlink(missing_ok=True)
            raise
        return ReceivedFile(temp_path, size, digest.hexdigest())

    def place(self, received: ReceivedFile) -> None:
        """Move a received file to its content path (or drop it if that content exists).

        Blocking; called inside the database write that records the media, so that a
        deletion of the same content cannot interleave.
        """
        target = self.content_path(received.sha256)
        if target.exists():
            received.temp_path.unlink(missing_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(received.temp_path, target)

    def discard(self, received: ReceivedFile) -> None:
        received.temp_path.unlink(missing_ok=True)

    def delete_content(self, sha256: str) -> None:
        """Remove a content file and its thumbnails (blocking; inside the deleting write)."""
        self.content_path(sha256).unlink(missing_ok=True)
        thumbs = self.thumbnail_dir(sha256)
        if thumbs.is_dir():
            for p in thumbs.iterdir():
                p.unlink(missing_ok=True)
            thumbs.rmdir()


def too_large(limit: int) -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", f"upload is larger than the limit of {limit} bytes")


async def _drain(chunks: AsyncIterator[bytes], seen: int, limit: int) -> None:
    """Read (and drop) the rest of a refused body, up to ``limit`` bytes in all.

    A client that is still sending when the answer comes and the connection closes
    gets a reset instead of the 413; reading a bounded amount more avoids that.
    """
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            return


def _check_digest(sha256: str) -> None:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a SHA-256 hex digest")


def _open_new(path: Path) -> io.FileIO:
    return open(path, "xb", buffering=0)


def _write(f: io.FileIO, digest: _Hash, data: bytes) -> None:
    digest.update(data)
    view = memoryview(data)
    while view:
        written = f.write(view)
        view = view[written or 0 :]


def _finish(f: io.FileIO, digest: _Hash, data: bytes) -> None:
    try:
        if data:
            _write(f, digest, data)
        os.fsync(f.fileno())
    finally:
        f.close()


class FileStream:
    """An opened file, read in chunks in worker threads (an async iterator of bytes)."""

    def __init__(self, f: io.BufferedReader, size: int) -> None:
        self._f = f
        self.size = size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                data = await trio.to_thread.run_sync(self._f.read, CHUNK)
                if not data:
                    return
                yield data
        finally:
            self._f.close()

    def close(self) -> None:
        self._f.close()


async def open_stream(path: Path) -> FileStream:
    """Open ``path`` for streaming.

    Raises:
        FileNotFoundError: it is not there.
    """
    return await trio.to_thread.run_sync(_open_read, path)


def _open_read(path: Path) -> FileStream:
    f = open(path, "rb")  # noqa: SIM115 - closed by FileStream
    return FileStream(f, os.fstat(f.fileno()).st_size)
