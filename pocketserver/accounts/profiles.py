"""Profiles: local users' (changes are copied into their member events), and other
servers' users' read through federation (federation/remote_profiles.py)."""

from __future__ import annotations

import logging

from pocketserver.core.locality import Locality
from pocketserver.errors import MatrixError, not_found
from pocketserver.federation.remote_profiles import RemoteProfiles
from pocketserver.rooms.client import RoomClient
from pocketserver.storage import profiles as profile_store
from pocketserver.storage import state as state_store
from pocketserver.storage import users as user_store
from pocketserver.storage.user_directory import search_users

log = logging.getLogger(__name__)

MAX_DISPLAYNAME = 256
MAX_AVATAR_URL = 1000
FIELDS = ("displayname", "avatar_url")


class Profiles:
    def __init__(
        self, rooms: RoomClient, server_name: str, remote: RemoteProfiles | None = None
    ) -> None:
        self._rooms = rooms
        self._db = rooms.store.db
        self.server_name = server_name
        self.locality = Locality(server_name)
        self._remote = remote

    def _is_local(self, user_id: str) -> bool:
        return self.locality.is_mine(user_id)

    async def get(self, user_id: str) -> dict[str, object]:
        """Raises: MatrixError 404 ``M_NOT_FOUND`` for an unknown (or remote) user."""
        if not self._is_local(user_id) or await self._db.read(user_store.get_user, user_id) is None:
            raise not_found("no such user")
        found = await self._db.read(profile_store.get_profile, user_id)
        displayname, avatar_url = found if found else (None, None)
        result: dict[str, object] = {}
        if displayname is not None:
            result["displayname"] = displayname
        if avatar_url is not None:
            result["avatar_url"] = avatar_url
        return result

    async def lookup(self, user_id: str) -> dict[str, object]:
        """Anyone's profile (``GET /profile/{userId}``): a local user's from the
        database, another server's user's from their server (remote_profiles.py).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` for an unknown user; for a remote user
                also 403 or 502 (see federation/remote_errors.py).
        """
        if self._is_local(user_id) or self._remote is None:
            return await self.get(user_id)
        return await self._remote.get(user_id)

    async def search_directory(
        self, searcher: str, term: str, limit: int
    ) -> list[tuple[str, str | None, str | None]]:
        """The user directory (``POST /user_directory/search``): (user ID, display
        name, avatar URL) of users ``searcher`` may see whose ID or name contains
        ``term``, at most ``limit + 1`` rows (one more says the answer is limited)."""
        return await self._db.read(search_users, searcher, term, limit)

    async def member_content(self, user_id: str) -> dict[str, object]:
        """The profile fields a member event of this user carries."""
        try:
            return await self.get(user_id)
        except MatrixError:
            return {}

    async def set_field(self, user_id: str, field: str, value: str | None) -> None:
        """Set a field and copy it into the user's member event in every joined room.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` if too long.
        """
        limit = MAX_DISPLAYNAME if field == "displayname" else MAX_AVATAR_URL
        if value is not None and len(value) > limit:
            raise MatrixError(400, "M_INVALID_PARAM", f"{field} is longer than {limit}")
        if field == "avatar_url" and value and not value.startswith("mxc://"):
            raise MatrixError(400, "M_INVALID_PARAM", "avatar_url must be an mxc:// URI")
        await self._db.write(profile_store.set_profile_field, user_id, field, value)
        content = await self.member_content(user_id)
        for room_id in await self._db.read(state_store.rooms_for_user, user_id, "join"):
            try:
                await self._rooms.membership(user_id, room_id, user_id, "join", extra=content)
            except MatrixError as e:  # e.g. the room forbids member changes now
                log.info("profile change not copied into %s: %s", room_id, e.error)

    async def set_initial(self, user_id: str, displayname: str) -> None:
        await self._db.write(profile_store.set_profile_field, user_id, "displayname", displayname)
