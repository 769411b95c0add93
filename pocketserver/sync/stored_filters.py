"""Filters a user uploaded (client-server API "Filtering": ``POST /user/{userId}/filter``)
and their use by ID in ``/sync``. A stored filter never changes, so its parsed form is
cached (the sync handler's byte-bounded ``sync_filters`` cache)."""

from __future__ import annotations

import json

import trio

from pocketserver.cache import LruCache
from pocketserver.core.crypto import encode_canonical_json
from pocketserver.core.event_filter import SyncFilter
from pocketserver.errors import not_found
from pocketserver.storage import filters as filter_store
from pocketserver.storage.db import Database


class StoredFilters:
    def __init__(self, db: Database, cache: LruCache[tuple[str, int], SyncFilter]) -> None:
        self._db = db
        self._cache = cache

    async def add(self, user_id: str, body: dict[str, object]) -> int:
        """Store a filter (already validated by the caller); return its ID."""
        text = encode_canonical_json(body).decode("utf-8")
        filter_id: int = await self._db.write(filter_store.add_filter, user_id, text)
        return filter_id

    async def get_json(self, user_id: str, filter_id: int) -> dict[str, object]:
        """The filter as it was uploaded.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND``.
        """
        stored = await self._db.read(filter_store.get_filter, user_id, filter_id)
        if stored is None:
            raise not_found("no such filter")
        result: dict[str, object] = json.loads(stored)
        return result

    async def get(self, user_id: str, filter_id: int) -> SyncFilter:
        """The parsed filter, from the cache when it was used before.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND``.
        """
        key = (user_id, filter_id)
        known = self._cache.get(key)
        if known is not None:
            await trio.lowlevel.checkpoint()
            return known
        parsed = SyncFilter.parse(await self.get_json(user_id, filter_id))
        self._cache.set(key, parsed)
        return parsed
