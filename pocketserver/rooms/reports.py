"""Reporting content (client-server-api/modules/report_content.md,
data/api/client-server/report_content.yaml): events, rooms and users.

Reports are stored for the server's admins (tables ``event_reports``,
``room_reports``, ``user_reports``); each costs one token of the user's message
rate limit, so a user cannot fill the disk with them.
"""

from __future__ import annotations

import time

import trio

from pocketserver.core.locality import Locality
from pocketserver.errors import not_found
from pocketserver.ratelimit import RateLimiter
from pocketserver.rooms.client import RoomClient
from pocketserver.storage import reports as report_store
from pocketserver.storage import users as user_store

_HIDDEN = "event not found or you are not joined to the room"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Reports:
    def __init__(self, rooms: RoomClient, message_limit: RateLimiter, locality: Locality) -> None:
        self._rooms = rooms
        self._db = rooms.store.db
        self._limit = message_limit
        self._locality = locality

    async def report_event(
        self, reporter: str, room_id: str, event_id: str, reason: str | None
    ) -> None:
        """The reporter must be joined; an unknown, invisible or redacted event is 404
        (the same answer, so a report tells nothing about the room).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND``; 429.
        """
        membership, _ = await self._rooms.membership_of(room_id, reporter)
        if membership != "join":
            raise not_found(_HIDDEN)
        events = await self._rooms.visible_events(reporter, room_id, [event_id])
        found = events.get(event_id)
        if found is None or found.redacted_because is not None:
            raise not_found(_HIDDEN)
        self._limit.check(reporter, trio.current_time())
        await self._db.write(
            report_store.add_event_report, room_id, event_id, reporter, reason, _now_ms()
        )

    async def report_room(self, reporter: str, room_id: str, reason: str) -> None:
        """Anyone may report a room this server knows, joined or not (v1.13).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND``; 429.
        """
        if await self._rooms.store.room_version(room_id) is None:
            raise not_found("room not found")
        self._limit.check(reporter, trio.current_time())
        await self._db.write(report_store.add_room_report, room_id, reporter, reason, _now_ms())

    async def report_user(self, reporter: str, user_id: str, reason: str) -> None:
        """Local users must exist; users of other servers can't be checked here and are
        accepted (v1.14).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND``; 429.
        """
        local = self._locality.is_mine(user_id)
        if local and await self._db.read(user_store.get_user, user_id) is None:
            raise not_found("user not found")
        self._limit.check(reporter, trio.current_time())
        await self._db.write(report_store.add_user_report, user_id, reporter, reason, _now_ms())
