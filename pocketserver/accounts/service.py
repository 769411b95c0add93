"""The account service: register users, log in and out, resolve access tokens."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from pocketserver.accounts import passwords, tokens
from pocketserver.cache import LruCache, MemoryBudget
from pocketserver.config.model import Config
from pocketserver.core.identifiers import is_valid_localpart, is_valid_user_id
from pocketserver.core.locality import Locality
from pocketserver.errors import MatrixError, forbidden, unknown_token
from pocketserver.storage import dehydrated as dehydrated_store
from pocketserver.storage import devices as device_store
from pocketserver.storage import e2e_keys as e2e_key_store
from pocketserver.storage import users as user_store
from pocketserver.storage.db import Database

log = logging.getLogger(__name__)

MAX_DEVICE_ID_LENGTH = 255
MAX_DISPLAY_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Requester:
    """Who is making an authenticated request."""

    user_id: str
    device_id: str
    is_guest: bool = False
    app_service: str | None = None
    """The ID of the application service making the request with its ``as_token``
    (then ``device_id`` is empty unless the service named a device)."""
    is_admin: bool = False
    """A server admin (the ``admin`` flag of the account, as Synapse's
    ``is_server_admin``), read when the token is resolved. The flag changes only
    offline (``register_new_matrix_user --admin``), so a cached requester stays true."""


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    device_id: str
    access_token: str


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _now_ms() -> int:
    return int(time.time() * 1000)


class AccountService:
    """Users, passwords, devices and access tokens.

    bcrypt runs in worker threads, at most ``hash_threads`` at once, so a burst of
    logins queues instead of starving the event loop or the CPU.
    """

    def __init__(self, db: Database, config: Config, budget: MemoryBudget, hash_threads: int = 2):
        self._db = db
        self._config = config
        self.server_name = config.server_name
        self.locality = Locality(config.server_name)
        self._hash_limiter = trio.CapacityLimiter(hash_threads)
        # token hash -> Requester; dropped on logout.
        self._token_cache: LruCache[bytes, Requester] = budget.cache("access_tokens", 0.02)
        # Bumped by every change that invalidates tokens. A lookup that started before
        # such a change does not cache what it read (it may be a token just removed).
        self._token_generation = 0
        # Called (never blocking) after tokens are revoked, i.e. devices may be gone.
        self.tokens_revoked_listeners: list[Callable[[], None]] = []
        # Called (never blocking) with the device list stream position of a device
        # created or renamed, once committed.
        self.device_list_listeners: list[Callable[[int], None]] = []

    # --- identifiers -----------------------------------------------------------------

    def user_id_for(self, localpart_or_mxid: str) -> str:
        """The full user ID for a localpart or an MXID of this server.

        Raises:
            MatrixError: 400 ``M_INVALID_USERNAME`` if it isn't a valid local user ID.
        """
        if localpart_or_mxid.startswith("@"):
            user_id = localpart_or_mxid
            if not is_valid_user_id(user_id) or not self.locality.is_mine(user_id):
                raise MatrixError(400, "M_INVALID_USERNAME", "not a user ID of this server")
            return user_id
        return f"@{localpart_or_mxid}:{self.server_name}"

    def check_new_localpart(self, localpart: str) -> str:
        """Validate a localpart for a new account and return the user ID.

        Raises:
            MatrixError: 400 ``M_INVALID_USERNAME``.
        """
        if not is_valid_localpart(localpart, strict=True):
            raise MatrixError(
                400,
                "M_INVALID_USERNAME",
                "user ID localparts may contain only a-z, 0-9, '.', '_', '=', '-', '/' and '+'",
            )
        user_id = f"@{localpart}:{self.server_name}"
        if len(user_id.encode("utf-8")) > 255:
            raise MatrixError(400, "M_INVALID_USERNAME", "user ID is longer than 255 bytes")
        return user_id

    # --- passwords ---------------------------------------------------------------------

    async def hash_password(self, password: str) -> str:
        return await trio.to_thread.run_sync(
            lambda: passwords.hash_password(
                password, pepper=self._config.password_pepper, rounds=self._config.bcrypt_rounds
            ),
            limiter=self._hash_limiter,
        )

    async def _check_password(self, password: str, password_hash: str | None) -> bool:
        return await trio.to_thread.run_sync(
            lambda: passwords.check_password(
                password, password_hash, pepper=self._config.password_pepper
            ),
            limiter=self._hash_limiter,
        )

    # --- registration -----------------------------------------------------------------

    async def register(
        self,
        localpart: str,
        password: str | None,
        *,
        admin: bool = False,
        user_type: str | None = None,
    ) -> str:
        """Create an account and return its user ID.

        Raises:
            MatrixError: 400 ``M_INVALID_USERNAME`` or ``M_USER_IN_USE``.
        """
        user_id = self.check_new_localpart(localpart)
        if password is not None and not _is_text(password):
            raise MatrixError(400, "M_INVALID_PARAM", "the password is not valid Unicode text")
        if await self._db.read(user_store.find_user_case_insensitive, user_id):
            raise MatrixError(400, "M_USER_IN_USE", "that user ID is taken")
        password_hash = await self.hash_password(password) if password else None
        created = await self._db.write(
            partial(user_store.insert_user, admin=admin, user_type=user_type),
            user_id,
            password_hash,
            int(time.time()),
        )
        if not created:
            raise MatrixError(400, "M_USER_IN_USE", "that user ID is taken")
        log.info("registered %s%s", user_id, " (admin)" if admin else "")
        return user_id

    # --- sessions ----------------------------------------------------------------------

    async def login_password(self, user: str, password: str) -> str:
        """Check a password login and return the canonical user ID.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` for a wrong user or password,
                403 ``M_USER_DEACTIVATED`` for a deactivated account.
        """
        if not self._config.password_enabled:
            raise forbidden("password login is disabled on this server")
        try:
            user_id = self.user_id_for(user)
        except MatrixError:
            raise forbidden("invalid username or password") from None
        found = await self._db.read(user_store.get_user, user_id)
        if found is None:
            matches = await self._db.read(user_store.find_user_case_insensitive, user_id)
            found = matches[0] if len(matches) == 1 else None
        if found is None or not await self._check_password(password, found.password_hash):
            raise forbidden("invalid username or password")
        if found.deactivated:
            raise MatrixError(403, "M_USER_DEACTIVATED", "this account has been deactivated")
        return found.user_id

    async def check_active(self, user_id: str) -> None:
        """Raise unless the local account exists and is not deactivated.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` for no such account, 403
                ``M_USER_DEACTIVATED`` for a deactivated one.
        """
        found = await self._db.read(user_store.get_user, user_id)
        if found is None:
            raise forbidden("no such account")
        if found.deactivated:
            raise MatrixError(403, "M_USER_DEACTIVATED", "this account has been deactivated")

    async def create_session(
        self, user_id: str, device_id: str | None, display_name: str | None
    ) -> Session:
        """Create (or take over) a device and issue a new access token for it.

        Logging in with an existing device ID invalidates that device's old tokens
        (client-server API, "Login": ``device_id``).
        """
        if device_id is not None and not 0 < len(device_id) <= MAX_DEVICE_ID_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "device_id must be 1 to 255 characters")
        if display_name is not None and len(display_name) > MAX_DISPLAY_NAME_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "device display name is too long")
        token = tokens.new_access_token()
        token_hash = tokens.hash_token(token)
        chosen = device_id or tokens.new_device_id()
        old, position = await self._db.write(
            self._store_session, user_id, chosen, display_name, token_hash
        )
        if position is not None:
            self.device_list_changed(position)
        self._forget_tokens(old)
        return Session(user_id=user_id, device_id=chosen, access_token=token)

    @staticmethod
    def _store_session(
        conn: sqlite3.Connection,
        user_id: str,
        device_id: str,
        display_name: str | None,
        token_hash: bytes,
    ) -> tuple[list[bytes], int | None]:
        now = _now_ms()
        old: list[bytes] = []
        if dehydrated_store.is_dehydrated(conn, user_id, device_id):  # MSC3814: no takeover
            raise MatrixError(400, "M_INVALID_PARAM", "that device ID is a dehydrated device")
        position = None
        if device_store.ensure_device(conn, user_id, device_id, display_name, now):
            # A new device changes the user's device list (end_to_end_encryption.md
            # "Tracking the device list for a user"), as in Synapse.
            position = e2e_key_store.record_change(conn, user_id, device_id=device_id)
        else:
            old = device_store.token_hashes_for_device(conn, user_id, device_id)
            device_store.delete_device_tokens(conn, user_id, device_id)
        device_store.insert_token(conn, token_hash, user_id, device_id, now)
        return old, position

    def device_list_changed(self, position: int) -> None:
        """A device was created or renamed, at device list stream ``position``
        (committed): tell the listeners at once. Never blocks."""
        for listener in self.device_list_listeners:
            listener(position)

    def forget_tokens(self, hashes: list[bytes]) -> None:
        """Drop deleted tokens from the cache (after deleting them in a transaction)."""
        self._forget_tokens(hashes)

    def forget_all_tokens(self) -> None:
        """Drop every cached token: another process (``reset-password``) may have
        deleted some in the database. The next use of each reads the database again."""
        self._token_generation += 1
        self._token_cache.clear()
        for listener in self.tokens_revoked_listeners:
            listener()

    def _forget_tokens(self, hashes: list[bytes]) -> None:
        self._token_generation += 1
        for h in hashes:
            self._token_cache.pop(h)
        for listener in self.tokens_revoked_listeners:
            listener()

    async def is_taken(self, user_id: str) -> bool:
        """Whether a user ID is taken, ignoring case (as Synapse's registration check:
        ``@Alice`` and ``@alice`` may not both exist)."""
        return bool(await self._db.read(user_store.find_user_case_insensitive, user_id))

    async def authenticate(self, token: str) -> Requester:
        """Resolve an access token.

        Raises:
            MatrixError: 401 ``M_UNKNOWN_TOKEN``.
        """
        token_hash = tokens.hash_token(token)
        cached = self._token_cache.get(token_hash)
        if cached is not None:
            return cached
        generation = self._token_generation
        owner = await self._db.read(device_store.get_token_owner, token_hash)
        if owner is None:
            raise unknown_token()
        if owner.valid_until_ms is not None and owner.valid_until_ms < _now_ms():
            # Expired, not revoked: the client may refresh or log in again (soft logout).
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "access token has expired", soft_logout=True)
        if owner.replaces is not None:
            # First use of a refreshed access token: the pair it replaced is done with.
            retired = await self._db.write(device_store.retire_replaced, token_hash)
            if retired is not None:
                self._forget_tokens([retired])
        requester = Requester(
            owner.user_id, owner.device_id, is_guest=owner.is_guest, is_admin=owner.is_admin
        )
        if owner.valid_until_ms is None and generation == self._token_generation:
            self._token_cache.set(token_hash, requester)
        return requester

    async def logout(self, requester: Requester) -> None:
        """Delete the requester's device and its tokens."""
        hashes = await self._db.write(self._delete_device, requester.user_id, requester.device_id)
        self._forget_tokens(hashes)

    @staticmethod
    def _delete_device(conn: sqlite3.Connection, user_id: str, device_id: str) -> list[bytes]:
        hashes = device_store.token_hashes_for_device(conn, user_id, device_id)
        device_store.delete_device(conn, user_id, device_id)
        return hashes

    async def logout_all(self, user_id: str) -> None:
        """Delete every device and token of ``user_id``."""
        hashes = await self._db.write(self._delete_all, user_id)
        self._forget_tokens(hashes)

    @staticmethod
    def _delete_all(conn: sqlite3.Connection, user_id: str) -> list[bytes]:
        hashes = device_store.token_hashes_for_user(conn, user_id)
        device_store.delete_all_devices(conn, user_id)
        return hashes
