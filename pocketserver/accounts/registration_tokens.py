"""Registration tokens: Synapse's admin API and the ``m.login.registration_token`` stage.

A token allows ``uses_allowed`` registrations (unlimited if null) until
``expiry_time`` (never if null). As in Synapse, a use is *pending* from the moment a
UIA session validates the token until the registration completes (then it is
*completed*) or the session expires; a token is valid while
``pending + completed < uses_allowed``. Pending uses are counted from the live UIA
sessions, so they need no storage and vanish with their sessions.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from collections.abc import Mapping

import trio

from pocketserver.accounts.uia import StageFailed, UiaSession, UserInteractiveAuth
from pocketserver.errors import MatrixError, invalid_param, missing_param, not_found
from pocketserver.storage import registration_tokens as store
from pocketserver.storage.db import Database
from pocketserver.storage.registration_tokens import RegistrationToken

TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{1,64}", re.ASCII)
_ALPHABET = string.ascii_letters + string.digits + "._~-"
DEFAULT_LENGTH = 16
MAX_INT = 2**53 - 1


def _now_ms() -> int:
    return int(time.time() * 1000)


def _opt_count(body: Mapping[str, object], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise invalid_param(f"{key} must be a non-negative integer or null")
    return value


def _opt_expiry(body: Mapping[str, object]) -> int | None:
    value = body.get("expiry_time")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise invalid_param("expiry_time must be a timestamp in milliseconds or null")
    if value < _now_ms():
        raise invalid_param("expiry_time must not be in the past")
    return value


class RegistrationTokens:
    """Registration tokens in the database, and the uses pending in UIA sessions."""

    def __init__(self, db: Database, uia: UserInteractiveAuth) -> None:
        self._db = db
        self._uia = uia
        # Validating a token and counting a use both look at pending + completed.
        self._lock = trio.Lock()

    def pending(self, token: str, *, besides: UiaSession | None = None) -> int:
        return sum(
            1
            for s in self._uia.live_sessions()
            if s.registration_token == token and s is not besides
        )

    def to_json(self, t: RegistrationToken) -> dict[str, object]:
        return {
            "token": t.token,
            "uses_allowed": t.uses_allowed,
            "pending": self.pending(t.token),
            "completed": t.completed,
            "expiry_time": t.expiry_time,
        }

    def _is_valid(self, t: RegistrationToken | None, besides: UiaSession | None = None) -> bool:
        if t is None:
            return False
        if t.expiry_time is not None and t.expiry_time <= _now_ms():
            return False
        used = t.completed + self.pending(t.token, besides=besides)
        return t.uses_allowed is None or used < t.uses_allowed

    # --- the admin API -------------------------------------------------------------------

    async def list(self, valid: bool | None) -> list[dict[str, object]]:
        tokens = await self._db.read(store.list_tokens)
        return [self.to_json(t) for t in tokens if valid is None or self._is_valid(t) == valid]

    async def get(self, token: str) -> dict[str, object]:
        """Raises: MatrixError 404 ``M_NOT_FOUND``."""
        found = await self._db.read(store.get_token, token)
        if found is None:
            raise not_found("no such registration token")
        return self.to_json(found)

    async def create(self, body: Mapping[str, object]) -> dict[str, object]:
        """Create a token from the admin API's body (``token`` or ``length``, limits).

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a bad field or an existing token.
        """
        uses_allowed = _opt_count(body, "uses_allowed")
        expiry_time = _opt_expiry(body)
        token = body.get("token")
        if token is not None:
            if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
                raise invalid_param("token must be 1-64 characters of A-Z a-z 0-9 . _ ~ -")
            if not await self._db.write(store.insert_token, token, uses_allowed, expiry_time):
                raise invalid_param("token already exists")
            return await self.get(token)
        length = body.get("length", DEFAULT_LENGTH)
        if isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= 64:
            raise invalid_param("length must be an integer from 1 to 64")
        for _ in range(10):
            token = "".join(secrets.choice(_ALPHABET) for _ in range(length))
            if await self._db.write(store.insert_token, token, uses_allowed, expiry_time):
                return await self.get(token)
        raise MatrixError(500, "M_UNKNOWN", "could not generate an unused token")

    async def update(self, token: str, body: Mapping[str, object]) -> dict[str, object]:
        """Change ``uses_allowed`` and/or ``expiry_time``.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM``, 404 ``M_NOT_FOUND``.
        """
        changes: dict[str, int | None] = {}
        if "uses_allowed" in body:
            changes["uses_allowed"] = _opt_count(body, "uses_allowed")
        if "expiry_time" in body:
            changes["expiry_time"] = _opt_expiry(body)
        found = await self._db.write(store.update_token, token, changes)
        if found is None:
            raise not_found("no such registration token")
        return self.to_json(found)

    async def delete(self, token: str) -> None:
        """Raises: MatrixError 404 ``M_NOT_FOUND``."""
        if not await self._db.write(store.delete_token, token):
            raise not_found("no such registration token")

    # --- registration ------------------------------------------------------------------

    async def is_valid(self, token: str) -> bool:
        if not TOKEN_RE.fullmatch(token):
            return False
        return self._is_valid(await self._db.read(store.get_token, token))

    async def check_stage(self, session: UiaSession, auth: Mapping[str, object]) -> None:
        """The ``m.login.registration_token`` stage: validate and reserve a use."""
        token = auth.get("token")
        if token is None:
            raise missing_param("auth.token")
        if not isinstance(token, str):
            raise MatrixError(400, "M_BAD_JSON", "auth.token must be a string")
        async with self._lock:
            found = (
                await self._db.read(store.get_token, token) if TOKEN_RE.fullmatch(token) else None
            )
            if not self._is_valid(found, besides=session):
                raise StageFailed("M_FORBIDDEN", "invalid registration token")
            session.registration_token = token

    async def count_use(self, session: UiaSession) -> None:
        """The registration of ``session`` completed: its pending use becomes completed
        (the session itself stays, for a repeat of the request, no longer pending)."""
        token = session.registration_token
        async with self._lock:
            if token is not None:
                await self._db.write(store.count_use, token)
            session.registration_token = None
