"""Read receipts (client-server API "Receipts", including private and threaded ones).

The latest receipt of each (room, user, type, thread) is stored; a receipt for an
earlier event than the stored one changes nothing (as in Synapse). The ``receipts``
stream position is a counter in the database, so tokens stay valid across restarts.
``m.fully_read`` sent as a receipt moves the read marker (room account data,
owned by the account data service, see :attr:`ReceiptService.read_markers`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import trio

from pocketserver.errors import MatrixError, not_found
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.reading import ReadEvent
from pocketserver.storage import receipts as receipt_store
from pocketserver.storage.receipts import Receipt
from pocketserver.streams.notifier import Notifier
from pocketserver.sync.sources import SyncContext

log = logging.getLogger(__name__)

READ = "m.read"
READ_PRIVATE = "m.read.private"
FULLY_READ = "m.fully_read"
RECEIPT_TYPES = (READ, READ_PRIVATE, FULLY_READ)
MAIN_THREAD = "main"
INITIAL_RECEIPTS_PER_ROOM = 100
"""A room sent from scratch carries at most this many receipts (the latest ones)."""
MAX_RELATION_HOPS = 3
"""How far to follow relations to find an event's thread (the spec's recommendation)."""


class ReadMarkers(Protocol):
    """Where the fully read marker lives (room account data ``m.fully_read``)."""

    async def fully_read(self, user_id: str, room_id: str) -> str | None: ...

    async def set_fully_read(self, user_id: str, room_id: str, event_id: str) -> None: ...


ReceiptListener = Callable[[str, str, str, str, str | None], None]
"""``(user_id, room_id, receipt_type, event_id, thread_id)``, after the receipt commits."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _relation(pdu: Mapping[str, object]) -> tuple[str | None, str | None]:
    content = pdu.get("content")
    relates = content.get("m.relates_to") if isinstance(content, Mapping) else None
    if not isinstance(relates, Mapping):
        return None, None
    rel_type, parent = relates.get("rel_type"), relates.get("event_id")
    return (
        rel_type if isinstance(rel_type, str) else None,
        parent if isinstance(parent, str) else None,
    )


class ReceiptService:
    """The ``receipts`` stream and ``POST /rooms/{roomId}/receipt/...``."""

    stream = "receipts"

    def __init__(
        self,
        rooms: RoomClient,
        notifier: Notifier,
        position: int,
        *,
        activity: Callable[[str], None] = lambda user_id: None,
        read_markers: ReadMarkers | None = None,
    ) -> None:
        self._rooms = rooms
        self._db = rooms.store.db
        self._notifier = notifier
        self._position = position
        notifier.notify_stream(self.stream, position)  # where the stream starts
        self._listeners: list[ReceiptListener] = []
        self.activity = activity
        """Called with the user ID of every receipt sent (presence activity)."""
        self.read_markers = read_markers
        """For ``m.fully_read`` sent as a receipt; without it that type is refused."""

    def add_listener(self, callback: ReceiptListener) -> None:
        """Call ``callback(user_id, room_id, receipt_type, event_id, thread_id)`` after
        every ``m.read`` / ``m.read.private`` receipt that changed what is stored."""
        self._listeners.append(callback)

    async def set_receipt(
        self,
        user_id: str,
        room_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: str | None = None,
    ) -> None:
        """Move ``user_id``'s receipt of this type (and thread) to ``event_id``.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for an unknown receipt type or a bad
                ``thread_id`` (empty, given for ``m.fully_read``, or not the event's
                thread); 403 ``M_FORBIDDEN`` if the user is not joined to the room;
                404 ``M_NOT_FOUND`` if the event is not in the room or not visible
                to the user; 400 ``M_UNRECOGNIZED`` for ``m.fully_read`` when no
                :attr:`read_markers` is connected.
        """
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError(
                400, "M_INVALID_PARAM", f"receipt type must be one of {', '.join(RECEIPT_TYPES)}"
            )
        if receipt_type == FULLY_READ and self.read_markers is None:
            raise MatrixError(400, "M_UNRECOGNIZED", "read markers are not supported here")
        if thread_id is not None:
            if not thread_id:
                raise MatrixError(400, "M_INVALID_PARAM", "thread_id must be a non-empty string")
            if receipt_type == FULLY_READ:
                raise MatrixError(400, "M_INVALID_PARAM", "m.fully_read has no thread_id")
        await self._rooms.require_joined(user_id, room_id)
        event = (await self._rooms.visible_events(user_id, room_id, [event_id])).get(event_id)
        if event is None:
            raise not_found(f"no event {event_id} visible in {room_id}")
        if thread_id is not None and not await self._in_thread(event, thread_id):
            raise MatrixError(
                400, "M_INVALID_PARAM", f"event {event_id} is not in thread {thread_id}"
            )
        self.activity(user_id)
        if receipt_type == FULLY_READ:
            await self._set_fully_read(user_id, event)
            return
        position = await self._db.write(
            receipt_store.put_receipt,
            room_id,
            user_id,
            receipt_type,
            thread_id,
            event_id,
            event.stream_ordering,
            _now_ms(),
        )
        if position is None:
            return  # the stored receipt is already at this event or later
        self._position = max(self._position, position)
        self._notifier.notify_stream(self.stream, position, rooms=(room_id,))
        for listener in self._listeners:
            try:
                listener(user_id, room_id, receipt_type, event_id, thread_id)
            except Exception:
                log.exception("receipt listener %r failed", listener)

    async def _set_fully_read(self, user_id: str, event: ReadEvent) -> None:
        """Move the read marker to ``event`` unless it is already at a later event
        (as ``/read_markers`` does)."""
        markers = self.read_markers
        if markers is None:
            raise MatrixError(400, "M_UNRECOGNIZED", "read markers are not supported here")
        old_id = await markers.fully_read(user_id, event.room_id)
        if old_id == event.event_id:
            return
        if old_id is not None:
            old = await self._rooms.store.get_event(old_id)
            if (
                old is not None
                and old.room_id == event.room_id
                and old.stream_ordering > event.stream_ordering
            ):
                return
        await markers.set_fully_read(user_id, event.room_id, event.event_id)

    async def _in_thread(self, event: ReadEvent, thread_id: str) -> bool:
        thread = await self._thread_of(event)
        # A thread root is in the main timeline, and also the start of its thread.
        return thread_id == thread or (thread == MAIN_THREAD and thread_id == event.event_id)

    async def _thread_of(self, event: ReadEvent) -> str:
        """``main`` or the thread root's event ID (client-server API "Threaded read
        receipts": a thread relation, followed through up to 3 other relations)."""
        pdu: Mapping[str, object] = event.pdu
        for _ in range(MAX_RELATION_HOPS):
            rel_type, parent = _relation(pdu)
            if parent is None:
                return MAIN_THREAD
            if rel_type == "m.thread":
                return parent
            parent_event = await self._rooms.store.get_event(parent)
            if parent_event is None or parent_event.room_id != event.room_id:
                return MAIN_THREAD
            pdu = parent_event.pdu
        return MAIN_THREAD

    # --- sync ------------------------------------------------------------------------

    def position(self) -> int:
        return self._position

    async def add_to_sync(self, ctx: SyncContext, since: int | None, upto: int) -> bool:
        """One ``m.receipt`` event per joined room with receipts changed in
        ``(since, upto]``; rooms sent from scratch get their latest receipts."""
        joined = [
            r
            for r in ctx.joined_rooms
            if ctx.filter.ephemeral.matches({"type": "m.receipt", "room_id": r})
        ]
        if since is None:
            fresh, known = joined, []
        else:
            since = min(since, upto)  # a token from before a restore: nothing to send
            fresh = [r for r in joined if r in ctx.new_rooms]
            known = [r for r in joined if r not in ctx.new_rooms] if since < upto else []
        if not fresh and not known:
            await trio.lowlevel.checkpoint()
            return False

        def read(conn: sqlite3.Connection) -> list[Receipt]:
            found = receipt_store.latest_receipts(
                conn, ctx.user_id, fresh, upto, INITIAL_RECEIPTS_PER_ROOM
            )
            if known and since is not None:
                found += receipt_store.changed_receipts(conn, ctx.user_id, since, upto, known)
            return found

        receipts = await self._db.read(read)
        # One event per room and thread (receipts.md "Server behaviour"): a user's
        # unthreaded and threaded receipts may name the same event.
        batches: dict[tuple[str, str | None], dict[str, dict[str, dict[str, object]]]] = {}
        for receipt in receipts:
            entry: dict[str, object] = {"ts": receipt.ts}
            if receipt.thread_id is not None:
                entry["thread_id"] = receipt.thread_id
            content = batches.setdefault((receipt.room_id, receipt.thread_id), {})
            content.setdefault(receipt.event_id, {}).setdefault(receipt.receipt_type, {})[
                receipt.user_id
            ] = entry
        for (room_id, _), batch in batches.items():
            ctx.room_events(room_id, "ephemeral").append({"type": "m.receipt", "content": batch})
        return bool(batches)
