"""Builds the media repository and, if enabled, the URL previewer (for ``server.py``)."""

from __future__ import annotations

from pocketserver.cache import MemoryBudget
from pocketserver.config.model import Config
from pocketserver.media.preview import UrlPreviewer
from pocketserver.media.repository import MediaRepository, open_repository
from pocketserver.storage.db import Database

PREVIEW_CACHE_SHARE = 0.02


async def build_media(
    db: Database, config: Config, budget: MemoryBudget
) -> tuple[MediaRepository, UrlPreviewer | None]:
    repo = await open_repository(db, config)
    previewer = None
    if config.url_preview_enabled:
        previewer = UrlPreviewer(config, repo, budget.cache("url_previews", PREVIEW_CACHE_SHARE))
    return repo, previewer
