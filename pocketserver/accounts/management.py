"""Account management: the password UIA stage, password change, deactivation.

Client-server API "Account management" (``/account/password``,
``/account/deactivate``) and "Password-based" authentication in UIA.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from functools import partial

import trio

from pocketserver.accounts.devices import DeviceManager
from pocketserver.accounts.service import AccountService
from pocketserver.accounts.uia import StageFailed, UiaSession
from pocketserver.errors import MatrixError, bad_json, forbidden, missing_param
from pocketserver.ratelimit import RateLimiter
from pocketserver.rooms.client import RoomClient
from pocketserver.storage import deactivation
from pocketserver.storage import device_info as device_store
from pocketserver.storage import state as state_store
from pocketserver.storage import users as user_store
from pocketserver.storage.db import Database

log = logging.getLogger(__name__)

MAX_PASSWORD_LENGTH = 512


def check_new_password(password: str) -> None:
    """Raises: MatrixError 400 ``M_INVALID_PARAM`` for an empty, too long or NUL-holding one."""
    if not password or len(password) > MAX_PASSWORD_LENGTH or "\x00" in password:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"a password must be 1 to {MAX_PASSWORD_LENGTH} characters"
        )


def _identified_user(auth: Mapping[str, object]) -> str:
    """The user named in a password stage: ``identifier`` (``m.id.user``) or legacy ``user``."""
    identifier = auth.get("identifier")
    if identifier is None:
        user = auth.get("user")
        if user is None:
            raise missing_param("auth.identifier")
        if not isinstance(user, str):
            raise bad_json("auth.user must be a string")
        return user
    if not isinstance(identifier, Mapping):
        raise bad_json("auth.identifier must be an object")
    kind = identifier.get("type")
    if kind == "m.id.thirdparty" or kind == "m.id.phone":
        # client-server API "Password-based": an unknown 3PID is answered 403.
        raise forbidden("no account has this third-party identifier")
    if kind != "m.id.user":
        raise MatrixError(400, "M_UNRECOGNIZED", f"unsupported identifier type: {kind!r}")
    user = identifier.get("user")
    if user is None:
        raise missing_param("auth.identifier.user")
    if not isinstance(user, str):
        raise bad_json("auth.identifier.user must be a string")
    return user


class AccountManagement:
    def __init__(
        self,
        db: Database,
        accounts: AccountService,
        devices: DeviceManager,
        rooms: RoomClient,
        failed_logins: RateLimiter,
    ) -> None:
        self._db = db
        self._accounts = accounts
        self._devices = devices
        self._rooms = rooms
        self._failures = failed_logins

    async def check_password_stage(self, session: UiaSession, auth: Mapping[str, object]) -> None:
        """The ``m.login.password`` stage: the password of the session's user.

        A session without a user (no access token was sent) learns its user here.
        """
        user = _identified_user(auth)
        password = auth.get("password")
        if password is None:
            raise missing_param("auth.password")
        if not isinstance(password, str):
            raise bad_json("auth.password must be a string")
        key = user.lower()
        now = trio.current_time()
        if not self._failures.would_allow(key, now):
            self._failures.check(key, now)
        try:
            user_id = await self._accounts.login_password(user, password)
        except MatrixError as e:
            if e.status == 403:
                self._failures.record(key, now)
                raise StageFailed(e.errcode, e.error) from None
            raise
        if session.user_id is None:
            session.user_id = user_id
        elif session.user_id != user_id:
            # Another account's password is no failed attempt at this one's: refused
            # outright, as Synapse does (403), and the session keeps its stages.
            raise forbidden("that is not the password of this account")

    async def has_password(self, user_id: str) -> bool:
        user = await self._db.read(user_store.get_user, user_id)
        return user is not None and user.password_hash is not None

    async def change_password(
        self, user_id: str, new_password: str, *, keep_device: str | None, logout_devices: bool
    ) -> None:
        """Set a new password; with ``logout_devices`` delete every device but ``keep_device``.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for an unacceptable password.
        """
        check_new_password(new_password)
        password_hash = await self._accounts.hash_password(new_password)
        hashes = await self._db.write(
            _set_password, user_id, password_hash, logout_devices, keep_device
        )
        self._accounts.forget_tokens(hashes)

    async def deactivate(self, user_id: str, *, erase: bool) -> None:
        """Deactivate: no login, no devices, no profile; leave rooms, reject invites.

        The account row stays (its ID can never be registered again); the password
        hash stays too, so that a later login with it is told ``M_USER_DEACTIVATED``.
        """
        hashes = await self._db.write(partial(deactivation.deactivate_user, erase=erase), user_id)
        self._accounts.forget_tokens(hashes)
        for membership in ("invite", "knock", "join"):
            for room_id in await self._db.read(state_store.rooms_for_user, user_id, membership):
                try:
                    await self._rooms.membership(user_id, room_id, user_id, "leave")
                except MatrixError as e:
                    log.info("deactivated %s could not leave %s: %s", user_id, room_id, e.error)
        log.info("deactivated %s%s", user_id, " (erased)" if erase else "")


def _set_password(
    conn: sqlite3.Connection, user_id: str, password_hash: str, logout: bool, keep: str | None
) -> list[bytes]:
    user_store.set_password_hash(conn, user_id, password_hash)
    return device_store.delete_other_devices(conn, user_id, keep) if logout else []
