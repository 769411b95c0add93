"""Refresh tokens (client-server API "Refreshing access tokens", ``POST /refresh``).

A client that sends ``refresh_token: true`` to /login or /register gets an access
token that expires after ``refreshable_access_token_lifetime`` and a refresh token.
``/refresh`` trades a refresh token for a new pair. The old access token expires at
once; the old refresh token "remains valid until the new access token or refresh token
is used" (the spec's words: a client whose answer was lost must be able to repeat the
refresh). Repeating it replaces the unused pair issued before, so there is never more
than one waiting pair. First use of the new access token (accounts/service.py) or of the
new refresh token deletes the old pair. An expired access token is answered 401
``M_UNKNOWN_TOKEN`` with ``soft_logout: true``.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass

from pocketserver.accounts import tokens
from pocketserver.accounts.service import AccountService
from pocketserver.errors import MatrixError
from pocketserver.storage import devices as device_store
from pocketserver.storage import refresh_tokens as store
from pocketserver.storage.db import Database

REFRESH_PREFIX = "pkr_"


def _now_ms() -> int:
    return int(time.time() * 1000)


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class RefreshedTokens:
    access_token: str
    refresh_token: str
    expires_in_ms: int


class RefreshTokens:
    def __init__(
        self,
        db: Database,
        accounts: AccountService,
        access_lifetime_ms: int,
        refresh_lifetime_ms: int | None,
    ) -> None:
        self._db = db
        self._accounts = accounts
        self.access_lifetime_ms = access_lifetime_ms
        self._refresh_lifetime_ms = refresh_lifetime_ms

    def _refresh_valid_until(self, now: int) -> int | None:
        return None if self._refresh_lifetime_ms is None else now + self._refresh_lifetime_ms

    async def make_refreshable(self, access_token: str) -> tuple[str, int]:
        """Give a just-issued access token a lifetime and a refresh token.

        Returns:
            ``(refresh_token, expires_in_ms)``.
        """
        refresh = new_refresh_token()
        await self._db.write(
            self._attach, tokens.hash_token(access_token), tokens.hash_token(refresh)
        )
        return refresh, self.access_lifetime_ms

    def _attach(self, conn: sqlite3.Connection, access_hash: bytes, refresh_hash: bytes) -> None:
        token_id = store.access_token_id(conn, access_hash)
        if token_id is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "the session was ended meanwhile")
        now = _now_ms()
        store.set_access_token_expiry(conn, token_id, now + self.access_lifetime_ms)
        store.insert(conn, refresh_hash, token_id, now, self._refresh_valid_until(now))

    async def refresh(self, refresh_token: str) -> RefreshedTokens:
        """Trade a refresh token for a new access token and refresh token.

        Raises:
            MatrixError: 401 ``M_UNKNOWN_TOKEN`` for an unknown or used refresh token
                (``soft_logout: true`` if it merely expired).
        """
        access = tokens.new_access_token()
        refresh = new_refresh_token()
        revoked = await self._db.write(
            self._rotate,
            tokens.hash_token(refresh_token),
            tokens.hash_token(access),
            tokens.hash_token(refresh),
        )
        self._accounts.forget_tokens(revoked)
        return RefreshedTokens(access, refresh, self.access_lifetime_ms)

    def _rotate(
        self, conn: sqlite3.Connection, old_refresh: bytes, access_hash: bytes, refresh_hash: bytes
    ) -> list[bytes]:
        """Issue the new pair; the hashes of access tokens that stopped working."""
        found = store.get(conn, old_refresh)
        if found is None:
            raise MatrixError(
                401, "M_UNKNOWN_TOKEN", "unknown or already used refresh token", soft_logout=False
            )
        now = _now_ms()
        if found.valid_until_ms is not None and found.valid_until_ms <= now:
            raise MatrixError(
                401, "M_UNKNOWN_TOKEN", "the refresh token has expired", soft_logout=True
            )
        revoked = [found.access_token_hash]
        # This refresh token was itself issued by a refresh: using it retires that one's
        # predecessor for good.
        if (retired := device_store.retire_replaced(conn, found.access_token_hash)) is not None:
            revoked.append(retired)
        # A repeated refresh: the pair issued by the earlier one was never used.
        revoked += device_store.delete_successors(conn, found.access_token_hash)
        store.set_access_token_expiry(conn, found.access_token_id, now - 1)
        token_id = device_store.insert_token(
            conn,
            access_hash,
            found.user_id,
            found.device_id,
            now,
            valid_until_ms=now + self.access_lifetime_ms,
            replaces=found.access_token_hash,
        )
        store.insert(conn, refresh_hash, token_id, now, self._refresh_valid_until(now))
        return revoked
