"""Builds the media repository, the fetcher of other servers' media and, if enabled,
the URL previewer (for ``services.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pocketserver.cache import MemoryBudget
from pocketserver.config.model import Config
from pocketserver.media.remote import RemoteMediaFetcher, StreamingClient
from pocketserver.media.repository import MediaRepository, open_repository
from pocketserver.storage.db import Database

if TYPE_CHECKING:  # imported only when previews are enabled: httpx costs ~8 MB of RSS
    from pocketserver.media.preview import UrlPreviewer

PREVIEW_CACHE_SHARE = 0.02


async def build_media(
    db: Database, config: Config, budget: MemoryBudget, federation_client: StreamingClient
) -> tuple[MediaRepository, RemoteMediaFetcher, UrlPreviewer | None]:
    repo = await open_repository(db, config)
    remote = RemoteMediaFetcher(repo, federation_client, config)
    previewer = None
    if config.url_preview_enabled:
        from pocketserver.media.preview import UrlPreviewer

        previewer = UrlPreviewer(config, repo, budget.cache("url_previews", PREVIEW_CACHE_SHARE))
    return repo, remote, previewer
