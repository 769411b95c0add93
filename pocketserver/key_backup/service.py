"""Server-side key backups: versions (``/room_keys/version``) and keys (``/room_keys/keys``).

Spec: client-server-api modules/end_to_end_encryption.md "Server-side key backups",
data/api/client-server/key_backup.yaml. Each change is one write transaction; keys are
only written to the current (newest, not deleted) version, and an uploaded key only
replaces a stored one when it is better (:mod:`pocketserver.core.key_backup`).

Everything is bounded: ``auth_data`` and each key's ``session_data`` by size, each
version by its number of keys, and reading a whole backup streams it page by page
(:meth:`KeyBackupService.stream_keys`) instead of building it in memory.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from pocketserver.core.key_backup import KeyQuality
from pocketserver.errors import MatrixError, bad_json, invalid_param, missing_param, not_found
from pocketserver.storage import key_backup as store
from pocketserver.storage.db import Database
from pocketserver.storage.key_backup import BackedUpKey, VersionInfo

MAX_AUTH_DATA_BYTES = 64 * 1024
MAX_SESSION_DATA_BYTES = 16 * 1024
MAX_ALGORITHM_LENGTH = 255
MAX_SESSION_ID_LENGTH = 255
MAX_KEYS_PER_VERSION = 1_000_000
"""A heavy user of many years holds ~100k sessions; the rest is a runaway client."""
PAGE = 500
"""Keys read per database round trip while streaming a backup."""
MAX_INT = 2**53 - 1


def _encode(value: Mapping[str, object] | str) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _not_found() -> MatrixError:
    return not_found("Unknown backup version")


def parse_version(text: str) -> int:
    """A version as named in a path or query.

    Raises:
        MatrixError: 404 ``M_NOT_FOUND``: we never hand out anything else.
    """
    if not text.isdigit() or len(text) > 18 or text.startswith("0"):
        raise _not_found()
    return int(text)


def version_json(info: VersionInfo) -> dict[str, object]:
    return {
        "algorithm": info.algorithm,
        "auth_data": info.auth_data,
        "count": info.count,
        "etag": str(info.etag),
        "version": str(info.version),
    }


def update_json(info: VersionInfo) -> dict[str, object]:
    """The ``RoomKeysUpdateResponse`` of a key write."""
    return {"etag": str(info.etag), "count": info.count}


def _algorithm(body: Mapping[str, object]) -> str:
    value = body.get("algorithm")
    if value is None:
        raise missing_param("algorithm")
    if not isinstance(value, str):
        raise bad_json("algorithm must be a string")
    if not value or len(value) > MAX_ALGORITHM_LENGTH:
        raise invalid_param("bad algorithm")
    return value


def _auth_data(body: Mapping[str, object]) -> str:
    value = body.get("auth_data")
    if value is None:
        raise missing_param("auth_data")
    # The spec says an object; a string (MSC1219's opaque form, which SyTest 07-backup
    # still sends) is kept too, as Synapse keeps any JSON value here.
    if not isinstance(value, dict | str):
        raise bad_json("auth_data must be an object")
    encoded = _encode(value)
    if len(encoded.encode("utf-8")) > MAX_AUTH_DATA_BYTES:
        raise MatrixError(413, "M_TOO_LARGE", "auth_data is too large")
    return encoded


MAX_ROOM_ID_BYTES = 255


def check_room_id(room_id: str) -> str:
    """A backup's room ID is only a key for the client's own data: the ``!`` sigil and
    at most 255 bytes are checked, not the rest of the grammar. Synapse checks nothing
    here, and SyTest 07-backup backs up keys of ``!abcd`` (a room ID without a server
    name, which no room version has)."""
    if len(room_id) < 2 or room_id[0] != "!" or len(room_id.encode("utf-8")) > MAX_ROOM_ID_BYTES:
        raise invalid_param(f"not a room ID: {room_id[:100]!r}")
    return room_id


def check_session_id(session_id: str) -> str:
    if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
        raise invalid_param("bad session ID")
    return session_id


def _count(data: Mapping[str, object], name: str) -> int:
    value = data.get(name)
    if value is None:
        raise bad_json(f"key data needs {name}")
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_json(f"{name} must be an integer")
    if not 0 <= value <= MAX_INT:
        raise invalid_param(f"{name} out of range")
    return value


def parse_key(room_id: str, session_id: str, data: object) -> BackedUpKey:
    """One ``KeyBackupData`` object.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` / ``M_INVALID_PARAM``, 413 ``M_TOO_LARGE``.
    """
    check_room_id(room_id)
    check_session_id(session_id)
    if not isinstance(data, dict):
        raise bad_json("key data must be an object")
    verified = data.get("is_verified")
    if not isinstance(verified, bool):
        raise bad_json("is_verified must be true or false")
    session_data = data.get("session_data")
    if not isinstance(session_data, dict | str):  # a string: as auth_data (MSC1219)
        raise bad_json("session_data must be an object")
    encoded = _encode(session_data)
    if len(encoded.encode("utf-8")) > MAX_SESSION_DATA_BYTES:
        raise MatrixError(413, "M_TOO_LARGE", "session_data is too large")
    quality = KeyQuality(
        verified, _count(data, "first_message_index"), _count(data, "forwarded_count")
    )
    return BackedUpKey(room_id, session_id, quality, encoded)


def parse_room_keys(room_id: str, body: object) -> list[BackedUpKey]:
    """A ``RoomKeyBackup`` object (``{"sessions": {...}}``) for one room."""
    check_room_id(room_id)
    if not isinstance(body, dict):
        raise bad_json("room key backup must be an object")
    sessions = body.get("sessions")
    if sessions is None:
        raise missing_param("sessions")
    if not isinstance(sessions, dict):
        raise bad_json("sessions must be an object")
    return [parse_key(room_id, sid, data) for sid, data in sessions.items()]


def parse_all_keys(body: Mapping[str, object]) -> list[BackedUpKey]:
    """The body of ``PUT /room_keys/keys`` (``{"rooms": {...}}``)."""
    rooms = body.get("rooms")
    if rooms is None:
        raise missing_param("rooms")
    if not isinstance(rooms, dict):
        raise bad_json("rooms must be an object")
    keys: list[BackedUpKey] = []
    for room_id, room in rooms.items():
        keys.extend(parse_room_keys(room_id, room))
    return keys


@dataclass(frozen=True, slots=True)
class KeyBackupService:
    db: Database
    max_keys: int = MAX_KEYS_PER_VERSION

    # --- versions ----------------------------------------------------------------------

    async def create_version(self, user_id: str, body: Mapping[str, object]) -> str:
        """Create a version from the request body; return its version string.

        Raises:
            MatrixError: 400 for a missing or malformed ``algorithm`` / ``auth_data``.
        """
        algorithm = _algorithm(body)
        auth_data = _auth_data(body)
        return str(await self.db.write(store.create_version, user_id, algorithm, auth_data))

    async def get_version(self, user_id: str, version: str | None) -> VersionInfo:
        """The named version, or the current one for None.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` if there is none (or it was deleted).
        """
        if version is None:
            info = await self.db.read(store.current_version, user_id)
            if info is None:
                raise not_found("No current backup version")
            return info
        info = await self.db.read(store.get_version, user_id, parse_version(version))
        if info is None:
            raise _not_found()
        return info

    async def update_version(self, user_id: str, version: str, body: Mapping[str, object]) -> None:
        """Replace a version's ``auth_data``.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND``; 400 ``M_INVALID_PARAM`` if the algorithm
                or the body's ``version`` do not match; 400 for a malformed body.
        """
        number = parse_version(version)
        algorithm = _algorithm(body)
        auth_data = _auth_data(body)
        body_version = body.get("version")
        if body_version is not None and body_version != version:
            raise invalid_param("version in the body does not match the version in the path")

        def update(conn: sqlite3.Connection) -> None:
            info = store.get_version(conn, user_id, number)
            if info is None:
                raise _not_found()
            if info.algorithm != algorithm:
                raise invalid_param("Algorithm does not match")
            store.update_auth_data(conn, user_id, number, auth_data)

        await self.db.write(update)

    async def delete_version(self, user_id: str, version: str) -> None:
        """Delete a version and its keys (a version deleted before: nothing to do).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` if it never existed.
        """
        try:
            await self.db.write(store.delete_version, user_id, parse_version(version))
        except store.NoSuchVersion:
            raise _not_found() from None

    # --- keys --------------------------------------------------------------------------

    async def put_keys(self, user_id: str, version: str, keys: list[BackedUpKey]) -> VersionInfo:
        """Store keys in the current version (better keys replace worse ones).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` with no current version, 403
                ``M_WRONG_ROOM_KEYS_VERSION`` (with ``current_version``) if ``version``
                is not it, 413 ``M_TOO_LARGE`` past the key limit.
        """
        try:
            number = parse_version(version)
        except MatrixError:
            number = -1  # not a version of ours: not the current one either
        try:
            return await self.db.write(store.put_keys, user_id, number, keys, self.max_keys)
        except store.NoSuchVersion:
            raise _not_found() from None
        except store.WrongVersion as e:
            raise MatrixError(
                403,
                "M_WRONG_ROOM_KEYS_VERSION",
                "Wrong backup version.",
                current_version=str(e.current),
            ) from None
        except store.TooManyKeys:
            raise MatrixError(
                413, "M_TOO_LARGE", f"a backup holds at most {self.max_keys} keys"
            ) from None

    async def delete_keys(
        self, user_id: str, version: str, room_id: str | None, session_id: str | None
    ) -> VersionInfo:
        """Raises: MatrixError 404 ``M_NOT_FOUND`` for an unknown or deleted version."""
        try:
            return await self.db.write(
                store.delete_keys, user_id, parse_version(version), room_id, session_id
            )
        except store.NoSuchVersion:
            raise _not_found() from None

    async def get_key(
        self, user_id: str, version: str, room_id: str, session_id: str
    ) -> BackedUpKey:
        """Raises: MatrixError 404 ``M_NOT_FOUND`` for an unknown version or key."""
        info = await self.get_version(user_id, version)
        key = await self.db.read(store.get_key, user_id, info.version, room_id, session_id)
        if key is None:
            raise not_found("Key not found.")
        return key

    async def stream_keys(
        self, user_id: str, version: str, room_id: str | None
    ) -> AsyncIterator[bytes]:
        """The keys of a version (or of one room) as the JSON response, in chunks.

        The version is checked before the first chunk (so a 404 is still possible);
        then keys are read ``PAGE`` at a time. The result is ``{"rooms": {...}}``, or
        ``{"sessions": {...}}`` for one room.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` for an unknown or deleted version.
        """
        info = await self.get_version(user_id, version)
        return self._chunks(user_id, info.version, room_id)

    async def _chunks(
        self, user_id: str, version: int, room_id: str | None
    ) -> AsyncIterator[bytes]:
        yield b'{"sessions":{' if room_id is not None else b'{"rooms":{'
        after: tuple[str, str] | None = None
        room: str | None = None
        first_session = True
        while True:
            page = await self.db.read(store.keys_page, user_id, version, room_id, after, PAGE)
            parts: list[str] = []
            for key in page:
                if room_id is None and key.room_id != room:
                    if room is not None:
                        parts.append("}},")
                    parts.append(f'{json.dumps(key.room_id)}:{{"sessions":{{')
                    room = key.room_id
                    first_session = True
                if not first_session:
                    parts.append(",")
                first_session = False
                parts.append(f"{json.dumps(key.session_id)}:{_encode(key.to_json())}")
            if parts:
                yield "".join(parts).encode("utf-8")
            if len(page) < PAGE:
                break
            after = (page[-1].room_id, page[-1].session_id)
        tail = "}}" if room_id is None and room is not None else ""
        yield (tail + "}}").encode("utf-8")
