"""Builds the media repository and, if enabled, the URL previewer (for ``server.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pocketserver.cache import MemoryBudget
from pocketserver.config.model import Config
from pocketserver.media.repository import MediaRepository, open_repository
from pocketserver.storage.db import Database

if TYPE_CHECKING:  # imported only when previews are enabled: httpx costs ~8 MB of RSS
    from pocketserver.media.preview import UrlPreviewer

PREVIEW_CACHE_SHARE = 0.02


async def build_media(
    db: Database, config: Config, budget: MemoryBudget
) -> tuple[MediaRepository, UrlPreviewer | None]:
    repo = await open_repository(db, config)
    previewer = None
    if config.url_preview_enabled:
        from pocketserver.media.preview import UrlPreviewer

        previewer = UrlPreviewer(config, repo, budget.cache("url_previews", PREVIEW_CACHE_SHARE))
    return repo, previewer
