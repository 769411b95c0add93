"""URL previews (``GET /_matrix/client/v1/media/preview_url``).

Pages are fetched through :class:`SafeFetcher` (every address checked against the
IP blacklist, the connection pinned to the checked address, redirects followed by
hand), parsed for OpenGraph data, and the page's image is stored as local media.
Results are cached in a byte-bounded cache under the memory budget, for an hour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urljoin

import trio

from pocketserver.cache import LruCache
from pocketserver.config.model import Config
from pocketserver.errors import MatrixError
from pocketserver.media import thumbnails as thumbs
from pocketserver.media.headers import base_type
from pocketserver.media.preview_html import parse_opengraph
from pocketserver.media.repository import MediaRepository
from pocketserver.media.safe_fetch import (
    AddressPolicy,
    BodyHandler,
    FetchFailed,
    FetchRefused,
    Resolver,
    SafeFetcher,
    read_capped,
    system_resolver,
)

log = logging.getLogger(__name__)

CACHE_TTL_MS = 3_600_000
HTML_LIMIT = 1024 * 1024
MAX_URL_LENGTH = 2000
CONCURRENT_FETCHES = 4
HTML_TYPES = ("text/html", "application/xhtml+xml")

Preview = dict[str, object]


class UrlPreviewer:
    """Makes and caches previews; at most :data:`CONCURRENT_FETCHES` fetches at once."""

    def __init__(
        self,
        config: Config,
        repo: MediaRepository,
        cache: LruCache[str, tuple[int, Preview]],
        *,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._repo = repo
        self._max_size = config.media.max_spider_size
        self._cache = cache
        self.fetcher = SafeFetcher(
            AddressPolicy(
                config.url_preview_ip_range_blacklist, config.url_preview_ip_range_whitelist
            ),
            config.media.url_preview_url_blacklist,
            resolver=resolver,
        )
        self._limiter = trio.CapacityLimiter(CONCURRENT_FETCHES)

    async def preview(self, url: str, user_id: str) -> Preview:
        """The OpenGraph data of ``url`` (``og:image`` as an ``mxc://`` URI).

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` for a URL or address that is not allowed,
                502 ``M_UNKNOWN`` when the page cannot be fetched or is not usable.
        """
        if len(url) > MAX_URL_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "URL is too long")
        now = int(time.time() * 1000)
        cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            return dict(cached[1])
        async with self._limiter:
            try:
                result = await self.fetcher.fetch(url, self._page_handler(user_id))
            except FetchRefused as e:
                raise MatrixError(403, "M_FORBIDDEN", f"cannot preview this URL: {e}") from None
            except FetchFailed as e:
                raise MatrixError(502, "M_UNKNOWN", f"cannot preview this URL: {e}") from None
        self._cache.set(url, (now + CACHE_TTL_MS, result))
        return dict(result)

    def _page_handler(self, user_id: str) -> BodyHandler[Preview]:
        async def handle(final_url: str, ctype: str, chunks: AsyncIterator[bytes]) -> Preview:
            kind = base_type(ctype)
            if kind in HTML_TYPES:
                body = await read_capped(chunks, HTML_LIMIT)
                return await self._from_html(final_url, body, ctype, user_id)
            if kind.startswith("image/"):
                image = await self._store_image(user_id, kind, chunks)
                return {"og:title": final_url.rsplit("/", 1)[-1] or final_url, **image}
            raise FetchFailed(f"cannot preview content of type {kind}")

        return handle

    async def _from_html(self, page_url: str, body: bytes, ctype: str, user_id: str) -> Preview:
        og: Preview = dict(parse_opengraph(body, ctype))
        og.setdefault("og:url", page_url)
        image_url = og.pop("og:image", None)
        if isinstance(image_url, str) and image_url:
            try:
                image = await self.fetcher.fetch(
                    urljoin(page_url, image_url), self._image_handler(user_id)
                )
            except (FetchRefused, FetchFailed, MatrixError) as e:
                log.info("preview image of %s skipped: %s", page_url, e)
            else:
                og.update(image)
        return og

    def _image_handler(self, user_id: str) -> BodyHandler[Preview]:
        async def handle(_url: str, ctype: str, chunks: AsyncIterator[bytes]) -> Preview:
            kind = base_type(ctype)
            if not kind.startswith("image/"):
                raise FetchFailed(f"og:image is not an image ({kind})")
            return await self._store_image(user_id, kind, chunks)

        return handle

    async def _store_image(self, user_id: str, kind: str, chunks: AsyncIterator[bytes]) -> Preview:
        try:
            uri, row = await self._repo.upload_row(
                user_id, chunks, content_type=kind, upload_name=None, limit=self._max_size
            )
        except MatrixError as e:
            raise FetchFailed(e.error) from None
        image: Preview = {"og:image": uri, "og:image:type": kind, "matrix:image:size": row.size}
        if self._repo.pillow and kind in thumbs.THUMBNAILABLE:
            path = self._repo.served_original(row).path
            try:
                info = await trio.to_thread.run_sync(
                    thumbs.probe, path, self._repo.max_image_pixels
                )
            except thumbs.ThumbnailError:
                return image
            image["og:image:width"] = info.width
            image["og:image:height"] = info.height
        return image
