"""Users' account data: global and per room, room tags and the ignored user list.

Spec: client-server-api modules/account_data.md, tags.md, ignore_users.md. Every
change is one write transaction that takes the next account data stream position;
once committed, the position is published to the notifier so waiting syncs wake.
"""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.account_data import validate
from pocketserver.cache import LruCache, MemoryBudget
from pocketserver.errors import MatrixError, not_found
from pocketserver.storage import account_data as store
from pocketserver.storage.account_data import GLOBAL, AccountDataLimitError
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

STREAM = "account_data"
MAX_ITEMS_PER_USER = 20_000
"""Room account data grows with rooms (tags, read markers): room for thousands."""
MAX_BYTES_PER_USER = 16 * 1024 * 1024
IGNORED_CACHE_SHARE = 0.002


def _limit_error(e: AccountDataLimitError) -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", str(e))


class AccountDataService:
    """Reads and writes account data and publishes the stream position.

    Build it with :meth:`open`, which learns the committed position from the database.
    """

    def __init__(
        self, db: Database, notifier: Notifier, budget: MemoryBudget, position: int
    ) -> None:
        self.db = db
        self.notifier = notifier
        self._position = position
        self._ignored: LruCache[str, frozenset[str]] = budget.cache(
            "ignored_users", IGNORED_CACHE_SHARE
        )
        self._generation = 0
        notifier.notify_stream(STREAM, position)

    @classmethod
    async def open(
        cls, db: Database, notifier: Notifier, budget: MemoryBudget
    ) -> AccountDataService:
        return cls(db, notifier, budget, await db.read(store.stream_position))

    def position(self) -> int:
        """The account data stream's committed position."""
        return self._position

    # --- plain account data ------------------------------------------------------------

    async def get(self, user_id: str, room_id: str | None, type_: str) -> dict[str, object]:
        """One item's content.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` if the user has none of this type there.
        """
        content = await self.db.read(store.get, user_id, room_id or GLOBAL, type_)
        if content is None:
            raise not_found("account data not found")
        return content

    async def set_by_client(
        self, user_id: str, room_id: str | None, type_: str, content: Mapping[str, object]
    ) -> None:
        """Store what a client PUT: server-managed types are refused, the ignored user
        list is validated.

        Raises:
            MatrixError: 405 ``M_BAD_JSON`` for ``m.fully_read`` / ``m.push_rules``;
                400 for a bad type or ignored user list; 413 ``M_TOO_LARGE``.
        """
        validate.check_type(type_)
        validate.check_client_may_set(type_)
        if room_id is None and type_ == validate.IGNORED_USER_LIST:
            validate.check_ignored_user_list(user_id, content)
        await self.set(user_id, room_id, type_, content)

    async def set(
        self, user_id: str, room_id: str | None, type_: str, content: Mapping[str, object]
    ) -> None:
        """Store an item of any type (server-managed ones included, e.g. push rules).

        Raises:
            MatrixError: 413 ``M_TOO_LARGE`` past the size limits.
        """
        validate.check_size(content)
        try:
            position = await self.db.write(
                store.put,
                user_id,
                room_id or GLOBAL,
                type_,
                dict(content),
                MAX_ITEMS_PER_USER,
                MAX_BYTES_PER_USER,
            )
        except AccountDataLimitError as e:
            raise _limit_error(e) from None
        if room_id is None and type_ == validate.IGNORED_USER_LIST:
            self._forget_ignored(user_id)
        self._committed(position, user_id)

    def _committed(self, position: int, user_id: str) -> None:
        self._position = max(self._position, position)
        self.notifier.notify_stream(STREAM, self._position, users=(user_id,))

    # --- tags --------------------------------------------------------------------------

    async def tags(self, user_id: str, room_id: str) -> dict[str, object]:
        """The ``tags`` object of the room's ``m.tag`` item (empty if none)."""
        content = await self.db.read(store.get, user_id, room_id, validate.TAG)
        tags = content.get("tags") if content else None
        return dict(tags) if isinstance(tags, dict) else {}

    async def set_tag(
        self, user_id: str, room_id: str, tag: str, body: Mapping[str, object]
    ) -> None:
        """Add (or replace) one tag in the room's ``m.tag`` in one transaction.

        Raises:
            MatrixError: 400 for a bad tag name or order, 413 ``M_TOO_LARGE``.
        """
        value = validate.check_tag(tag, body)

        def change(old: dict[str, object] | None) -> dict[str, object]:
            content = dict(old or {})
            tags = content.get("tags")
            content["tags"] = {**(tags if isinstance(tags, dict) else {}), tag: value}
            validate.check_size(content)
            return content

        await self._update(user_id, room_id, validate.TAG, change)

    async def remove_tag(self, user_id: str, room_id: str, tag: str) -> None:
        """Remove one tag from the room's ``m.tag``; removing an absent tag changes nothing."""

        def change(old: dict[str, object] | None) -> dict[str, object] | None:
            tags = old.get("tags") if old else None
            if old is None or not isinstance(tags, dict) or tag not in tags:
                return None
            return {**old, "tags": {k: v for k, v in tags.items() if k != tag}}

        await self._update(user_id, room_id, validate.TAG, change)

    async def _update(
        self,
        user_id: str,
        room_id: str,
        type_: str,
        change: store.Change,
    ) -> None:
        try:
            position = await self.db.write(
                store.update,
                user_id,
                room_id,
                type_,
                change,
                MAX_ITEMS_PER_USER,
                MAX_BYTES_PER_USER,
            )
        except AccountDataLimitError as e:
            raise _limit_error(e) from None
        if position is not None:
            self._committed(position, user_id)

    # --- ignored users -----------------------------------------------------------------

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """The users ``user_id`` ignores (``m.ignored_user_list``), from a small cache.

        Spec (ignore_users.md): their non-state events and their invites are not sent
        to the user; a change applies to the very next sync.
        """
        cached = self._ignored.get(user_id)
        if cached is not None:
            return cached
        generation = self._generation
        content = await self.db.read(store.get, user_id, GLOBAL, validate.IGNORED_USER_LIST)
        ignored = validate.ignored_set(content)
        if generation == self._generation:  # no write raced with this read
            self._ignored.set(user_id, ignored)
        return ignored

    def _forget_ignored(self, user_id: str) -> None:
        self._generation += 1
        self._ignored.pop(user_id)

    # --- read markers ------------------------------------------------------------------

    async def fully_read(self, user_id: str, room_id: str) -> str | None:
        """The event ID of the user's fully read marker in the room, if any."""
        content = await self.db.read(store.get, user_id, room_id, validate.FULLY_READ)
        event_id = content.get("event_id") if content else None
        return event_id if isinstance(event_id, str) else None

    async def set_fully_read(self, user_id: str, room_id: str, event_id: str) -> None:
        """Move the fully read marker (room account data ``m.fully_read``)."""
        await self.set(user_id, room_id, validate.FULLY_READ, {"event_id": event_id})
