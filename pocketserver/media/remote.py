"""Media of other servers: fetched over federation for our users, cached in the media store.

Spec: client-server API "Content repository" (a download or thumbnail of
``mxc://<other server>/<id>`` is fetched from that server) and server-server API
"Content Repository" (``GET /_matrix/federation/v1/media/download/{mediaId}``, a
two-part ``multipart/mixed`` answer, :mod:`pocketserver.media.multipart`).

As Synapse (``synapse/media/media_repository.py``):

- a cached item is served from the cache; otherwise one download at a time per
  (server, media ID): concurrent requests wait for the same download;
- the answer is read as a stream into the media store, capped at ``max_upload_size``
  (more is 502 ``M_TOO_LARGE``, and nothing is kept);
- a server that does not know the federation endpoint (``M_UNRECOGNIZED``, or 404/405
  without an errcode, as servers before Matrix 1.11 answer) is asked on the old
  ``/_matrix/media/v3/download/{serverName}/{mediaId}?allow_remote=false``, which
  Synapse 1.163 no longer falls back to but older servers and other implementations
  may still need;
- 404 from the origin is 404 ``M_NOT_FOUND`` (and 504 ``M_NOT_YET_UPLOADED`` is passed
  on, where Synapse answers 502); every other failure (unreachable,
  timeout, an error status, a malformed answer, an address ``ip_range_blacklist``
  blocks) is 502 ``M_UNKNOWN``; a server outside ``federation_domain_whitelist`` is
  403 ``M_FORBIDDEN`` before any request;
- thumbnails are made here from the cached original (the repository's thumbnails
  belong to the content, whoever uploaded it).

A ``Location`` (redirect) answer is not followed: fetching an arbitrary URL would need
the URL-preview SSRF guard; it is 502 (Synapse follows it; servers that serve bytes,
Synapse among them, never send one).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from urllib.parse import quote, unquote

import trio

from pocketserver.config.model import Config
from pocketserver.errors import MatrixError
from pocketserver.federation.errors import (
    FederationError,
    FederationHttpError,
    FederationResponseTooLarge,
)
from pocketserver.media.multipart import MultipartError, MultipartReader, boundary_of
from pocketserver.media.repository import (
    MAX_TIMEOUT_MS,
    MediaRepository,
    not_found,
    now_ms,
    valid_media_id,
)
from pocketserver.storage.media import RemoteMediaRow

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 128 * 1024
"""Bytes of a multipart answer allowed beyond the file (metadata part, headers)."""
BODY_TIMEOUT_S = 120.0
"""How long the whole answer may take, beyond what ``timeout_ms`` lets the origin wait
for a pending upload (Synapse allows its default request timeout, 60 s, per read)."""
MAX_CONCURRENT_DOWNLOADS = 8
"""Downloads from other servers at once (all servers together); more wait their turn."""
TOUCH_EVERY_MS = 10 * 60_000
"""``last_access_ts`` is rewritten at most this often per item (it is for retention)."""
MAX_CONTENT_TYPE = 255
MAX_UPLOAD_NAME = 255
_CONTENT_TYPE_RE = re.compile(r"[\x21-\x7e]+/[\x21-\x7e]+(?:\s*;[\x20-\x7e]*)?")


class StreamedAnswer(Protocol):
    """What :meth:`FederationClient.stream` yields (federation/client.py)."""

    status: int
    headers: Mapping[str, str]

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


class StreamingClient(Protocol):
    """The federation client's streamed requests (``Services.federation_client``)."""

    def stream(
        self, method: str, destination: str, path: str, **kwargs: Any
    ) -> AbstractAsyncContextManager[StreamedAnswer]: ...


class _TooLarge(Exception):
    pass


@dataclass
class _Flight:
    """One download in progress; requests for the same item wait on ``done``."""

    done: trio.Event = field(default_factory=trio.Event)
    row: RemoteMediaRow | None = None
    error: MatrixError | None = None


@dataclass(frozen=True, slots=True)
class RemoteMediaStatistics:
    downloads: int
    """Items being fetched now."""
    waiting: int
    """Requests waiting for one of those downloads."""


def bad_gateway(error: str = "failed to fetch remote media") -> MatrixError:
    return MatrixError(502, "M_UNKNOWN", error)


def too_large(limit: int) -> MatrixError:
    return MatrixError(502, "M_TOO_LARGE", f"remote media is larger than {limit} bytes")


def filename_from_disposition(disposition: str | None) -> str | None:
    """The file name of a Content-Disposition (``filename*=utf-8''...`` preferred)."""
    if not disposition:
        return None
    plain: str | None = None
    for param in disposition.split(";")[1:]:
        name, eq, value = param.strip().partition("=")
        if not eq:
            continue
        name = name.strip().lower()
        value = value.strip()
        if name == "filename*":
            charset, _, rest = value.partition("''")
            if charset.lower() in ("utf-8", "utf8") and rest:
                try:
                    return _clean_name(unquote(rest, errors="strict"))
                except UnicodeDecodeError:
                    continue
        elif name == "filename":
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            plain = value
    return _clean_name(plain) if plain else None


def _clean_name(name: str) -> str | None:
    if not name or len(name) > MAX_UPLOAD_NAME or any(ord(c) < 32 for c in name):
        return None
    return name


def _clean_type(content_type: str | None) -> str:
    if (
        content_type
        and len(content_type) <= MAX_CONTENT_TYPE
        and _CONTENT_TYPE_RE.fullmatch(content_type.strip())
    ):
        return content_type.strip()
    return "application/octet-stream"


def _generator(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes]:
    """``aiter_bytes()`` is an async generator (closed when a read stops early)."""
    return cast(AsyncGenerator[bytes], chunks)


def _check_identity(answer: StreamedAnswer) -> None:
    """The bytes are stored as they come: a compressed answer (asked for uncompressed)
    would be stored compressed."""
    encoding = next((v for k, v in answer.headers.items() if k.lower() == "content-encoding"), "")
    if encoding.strip().lower() not in ("", "identity"):
        raise MultipartError(f"the answer is compressed ({encoding}), not stored")


def _unrecognized(e: FederationHttpError) -> bool:
    """The origin does not know the federation media endpoint (Synapse < 1.113, others)."""
    if e.errcode == "M_UNRECOGNIZED":
        return e.status in (400, 404, 405)
    return e.errcode is None and e.status in (404, 405)


class RemoteMediaFetcher:
    """Serves other servers' media from the cache, fetching it when missing.

    Args:
        repo: The media repository (the media store and the only writer of its tables).
        client: The federation client (``Services.federation_client``).
        config: ``max_upload_size`` caps a fetched file; ``federation_domain_whitelist``.
    """

    def __init__(self, repo: MediaRepository, client: StreamingClient, config: Config) -> None:
        self._repo = repo
        self._client = client
        self._limit = config.max_upload_size
        self._whitelist = config.federation_domain_whitelist
        self._flights: dict[tuple[str, str], _Flight] = {}
        self._downloads = trio.CapacityLimiter(MAX_CONCURRENT_DOWNLOADS)

    def statistics(self) -> RemoteMediaStatistics:
        return RemoteMediaStatistics(
            downloads=len(self._flights),
            waiting=sum(f.done.statistics().tasks_waiting for f in self._flights.values()),
        )

    async def get(
        self, origin: str, media_id: str, timeout_ms: int, *, fetch: bool = True
    ) -> RemoteMediaRow:
        """The cached item, fetched first if it is not cached (and ``fetch``).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` (invalid ID, unknown at the origin, not
                cached and ``fetch`` false), 403 ``M_FORBIDDEN`` (not in the
                federation whitelist), 502 (the fetch failed; ``M_TOO_LARGE`` past
                ``max_upload_size``).
        """
        if not valid_media_id(media_id) or self._repo.locality.is_mine(origin):
            raise not_found()
        if self._whitelist is not None and origin not in self._whitelist:
            raise MatrixError(403, "M_FORBIDDEN", f"federation with {origin} is not allowed")
        key = (origin, media_id)
        while True:
            row = await self._repo.get_remote(origin, media_id)
            if row is not None:
                await self._touch(row)
                return row
            if not fetch:
                raise not_found()
            flight = self._flights.get(key)
            if flight is not None:
                await flight.done.wait()
                if (e := flight.error) is not None:  # each waiter raises its own copy
                    raise MatrixError(e.status, e.errcode, e.error, **e.extra)
                if flight.row is not None:
                    return flight.row
                continue  # the request that was fetching it went away: try again
            flight = self._flights[key] = _Flight()
            try:
                # Stored by a download that ended since the read above?
                flight.row = await self._repo.get_remote(origin, media_id)
                if flight.row is None:
                    flight.row = await self._fetch(origin, media_id, timeout_ms)
                return flight.row
            except MatrixError as e:
                flight.error = e
                raise
            finally:
                del self._flights[key]
                flight.done.set()

    async def _touch(self, row: RemoteMediaRow) -> None:
        ts = now_ms()
        if ts - row.last_access_ts >= TOUCH_EVERY_MS:
            await self._repo.touch_remote(row.origin, row.media_id, ts)

    async def _fetch(self, origin: str, media_id: str, timeout_ms: int) -> RemoteMediaRow:
        timeout_ms = min(max(timeout_ms, 0), MAX_TIMEOUT_MS)
        async with self._downloads:
            try:
                try:
                    return await self._fetch_multipart(origin, media_id, timeout_ms)
                except FederationHttpError as e:
                    if not _unrecognized(e):
                        raise
                    log.info("%s has no federation media endpoint; trying the old one", origin)
                return await self._fetch_legacy(origin, media_id, timeout_ms)
            except FederationHttpError as e:
                log.info("fetching mxc://%s/%s: %s", origin, media_id, e)
                if e.status == 404:
                    raise not_found() from None
                if e.status == 504 and e.errcode == "M_NOT_YET_UPLOADED":
                    # Passed on (Synapse answers 502): the client spec's answer for
                    # "not uploaded yet, try again", which is what the origin said.
                    raise MatrixError(
                        504, "M_NOT_YET_UPLOADED", "content has not yet been uploaded"
                    ) from None
                raise bad_gateway() from None
            except (FederationResponseTooLarge, _TooLarge):
                log.info(
                    "fetching mxc://%s/%s: larger than %d bytes", origin, media_id, self._limit
                )
                raise too_large(self._limit) from None
            except FederationError as e:
                log.info("fetching mxc://%s/%s: %s", origin, media_id, e)
                raise bad_gateway() from None
            except MultipartError as e:
                log.info("fetching mxc://%s/%s: malformed answer: %s", origin, media_id, e)
                raise bad_gateway("the remote server's answer is not valid") from None

    def _timeout_s(self, timeout_ms: int) -> float:
        return timeout_ms / 1000 + BODY_TIMEOUT_S

    async def _fetch_multipart(self, origin: str, media_id: str, timeout_ms: int) -> RemoteMediaRow:
        path = f"/_matrix/federation/v1/media/download/{quote(media_id, safe='')}"
        limit = self._limit
        async with self._client.stream(
            "GET",
            origin,
            path,
            query={"timeout_ms": str(timeout_ms)},
            timeout_s=self._timeout_s(timeout_ms),
            max_size=limit + MULTIPART_OVERHEAD,
        ) as answer:
            _check_identity(answer)
            reader = MultipartReader(boundary_of(answer.headers.get("content-type")))

            async def file_bytes() -> AsyncGenerator[bytes]:
                async with aclosing(_generator(answer.aiter_bytes())) as body:
                    async for data in body:
                        out = reader.feed(data)
                        if reader.file_size > limit:
                            raise _TooLarge
                        if reader.location is not None:
                            raise MultipartError("a redirect (Location) answer, not followed")
                        if out:
                            yield out
                reader.close()

            async with aclosing(file_bytes()) as chunks:
                received = await self._repo.store.receive(chunks, limit)
        headers = reader.file_headers
        assert headers is not None  # reader.close() passed: both parts were read
        return await self._repo.record_remote(
            origin,
            media_id,
            received,
            content_type=_clean_type(headers.get("content-type")),
            upload_name=filename_from_disposition(headers.get("content-disposition")),
        )

    async def _fetch_legacy(self, origin: str, media_id: str, timeout_ms: int) -> RemoteMediaRow:
        path = f"/_matrix/media/v3/download/{quote(origin, safe='')}/{quote(media_id, safe='')}"
        async with self._client.stream(
            "GET",
            origin,
            path,
            query={"allow_remote": "false", "timeout_ms": str(timeout_ms)},
            timeout_s=self._timeout_s(timeout_ms),
            max_size=self._limit,
        ) as answer:
            _check_identity(answer)
            headers = {k.lower(): v for k, v in answer.headers.items()}
            async with aclosing(_generator(answer.aiter_bytes())) as chunks:
                received = await self._repo.store.receive(chunks, self._limit)
        return await self._repo.record_remote(
            origin,
            media_id,
            received,
            content_type=_clean_type(headers.get("content-type")),
            upload_name=filename_from_disposition(headers.get("content-disposition")),
        )
