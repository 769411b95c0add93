"""Guest accounts (client-server API "Guest Access", modules/guest_access.md).

Off unless ``allow_guest_access: true`` (as Synapse). ``POST /register?kind=guest`` makes an
account with a numeric localpart (``@17:example.org``, as Synapse's sequence does), no
password, its localpart as display name and a new device; ``is_guest`` is a column of
``users``, so every access token of the account is a guest token
(``Requester.is_guest``). A guest upgrades in place with ``guest_access_token`` in the
ordinary ``POST /register`` (api/register.py).

Routes refuse guests (``require_auth()``: 403 ``M_GUEST_ACCESS_FORBIDDEN``) unless they
pass ``require_auth(allow_guest=True)``. The allowed ones are the spec's list
("Client behaviour") where pocketserver has the endpoint, plus those Synapse's servlets
allow (``get_user_by_req(request, allow_guest=True)``), which clients use in a guest session:

* reading: ``GET /rooms/{roomId}/state``, ``/state/{type}/{key}``, ``/event/{id}``,
  ``/context/{id}``, ``/messages``, ``/members``; ``GET /sync``; ``GET
  /_matrix/client/v1/media/download/...`` and ``/thumbnail/...``; ``GET
  /rooms/{roomId}/initialSync`` and ``GET /events`` with a ``room_id`` (room previews)
  (spec). The global ``GET /initialSync`` and ``GET /events/{eventId}`` are refused,
  as in Synapse.
* sending: ``POST /rooms/{roomId}/join``, ``/leave``; ``PUT /rooms/{roomId}/send/...``,
  ``PUT /rooms/{roomId}/state/...``; ``PUT /sendToDevice/...`` (spec), and
  ``POST /join/{roomIdOrAlias}`` (Synapse: same servlet family as /rooms/{id}/join).
* own account: ``PUT /profile/{userId}/displayname`` only (other fields refused, as the
  spec says and as Synapse does with ``allow_guest=field_name == DISPLAYNAME``; pocketserver
  has no ``DELETE /profile/...`` yet); ``GET /devices``, ``GET``/``PUT
  /devices/{deviceId}``; ``GET /account/whoami`` (spec).
* encryption: ``POST /keys/upload``, ``/keys/query``, ``/keys/claim`` (spec), and
  ``GET /keys/changes``, ``POST /keys/signatures/upload`` (Synapse: a client keeps its
  device list and its own signatures up to date).
* Synapse only: ``GET /capabilities`` (clients read it at start), ``GET /joined_rooms``,
  ``GET`` and ``POST /publicRooms`` (a guest finds rooms to join),
  ``GET /v1/rooms/{roomId}/hierarchy`` and ``/v1/room_summary/...`` (room previews),
  ``GET /v1/rooms/{roomId}/relations/...`` (threads and edits in a readable room),
  ``GET /thirdparty/...`` (Element asks at start), ``GET /voip/turnServer`` (Synapse's
  ``turn_allow_guests`` defaults to true; pocketserver has no such key, so always).

Refused, as in Synapse (its servlets use the default ``allow_guest=False``): filters,
typing, receipts, read markers, presence, account data and tags, push rules, pushers and
notifications, room creation, invite/kick/ban/unban/knock, redaction,
``/joined_members``, ``/threads``, ``/timestamp_to_event``, mutual rooms, aliases and the
room directory's writes, search, the user directory, room upgrades, reports, key backup,
cross-signing key upload, dehydrated devices, media upload/config/URL previews, password,
3PIDs, deactivation, device deletion, login tokens and logout (Synapse refuses guests
``/logout`` too). Synapse answers a guest's invite/kick/ban with ``M_FORBIDDEN`` (one
servlet for every membership action); pocketserver has a route per action and answers
``M_GUEST_ACCESS_FORBIDDEN`` like every other refused route. matrix-js-sdk knows this: a
guest client posts no filter and reads no push rules.

Joins: a guest may join only a room whose ``m.room.guest_access`` is ``can_join``
(403 ``M_FORBIDDEN`` otherwise, spec "Server behaviour"). When a room's guest access stops
being ``can_join``, the room writer's listener queues the room and :meth:`GuestAccess.run`
makes every local guest member (joined or invited) leave, as Synapse's
``kick_guest_users`` does (the guest leaves by itself: no power level needed). A guest
join checked just before such a change is noticed too: its member event queues the room
for the same check. Synapse finds guests by ``"kind": "guest"`` in member events; this
module asks the ``users`` table, so an upgraded account is no longer made to leave.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from pocketserver.accounts.service import AccountService, Requester, Session
from pocketserver.errors import MatrixError, forbidden
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.storage import devices as device_store
from pocketserver.storage import profiles as profile_store
from pocketserver.storage import state as state_store
from pocketserver.storage.db import Database

log = logging.getLogger(__name__)

GUEST_ACCESS = "m.room.guest_access"
MEMBER = "m.room.member"
CAN_JOIN = "can_join"

KICK_QUEUE_SIZE = 256
"""Rooms waiting for their guests to be made to leave (each room queued once)."""
PENDING_JOINS = 1024
"""Guest joins allowed but not yet seen stored, remembered to re-check the room."""
LOCALPART_TRIES = 10
"""As Synapse: give up after this many taken numeric localparts in a row."""


@dataclass(frozen=True, slots=True)
class GuestStatistics:
    registered: int
    upgraded: int
    rooms_queued: int
    rooms_dropped: int
    guests_removed: int


class GuestAccess:
    """Guest registration and upgrade, the join rule for guests, and removing guests
    from rooms whose ``m.room.guest_access`` stops being ``can_join``."""

    def __init__(
        self, db: Database, accounts: AccountService, rooms: RoomClient, *, enabled: bool
    ) -> None:
        self._db = db
        self._accounts = accounts
        self._rooms = rooms
        self.enabled = enabled
        self._next_localpart: int | None = None
        self._localpart_lock = trio.Lock()
        self._send, self._receive = trio.open_memory_channel[str](KICK_QUEUE_SIZE)
        self._queued: set[str] = set()
        self._pending: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._registered = self._upgraded = self._dropped = self._removed = 0

    def statistics(self) -> GuestStatistics:
        return GuestStatistics(
            registered=self._registered,
            upgraded=self._upgraded,
            rooms_queued=len(self._queued),
            rooms_dropped=self._dropped,
            guests_removed=self._removed,
        )

    # --- registration ------------------------------------------------------------------

    async def register(self, device_display_name: str | None) -> Session:
        """Create a guest account with a new device and access token.

        Raises:
            MatrixError: 403 ``M_GUEST_ACCESS_FORBIDDEN`` when guest access is off,
                400 ``M_INVALID_PARAM`` for a too long device display name.
        """
        if not self.enabled:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "guest access is disabled")
        user_id = await self._new_guest()
        self._registered += 1
        log.info("registered guest %s", user_id)
        # The spec: the server picks the device ID whatever the client sends.
        return await self._accounts.create_session(user_id, None, device_display_name)

    async def _new_guest(self) -> str:
        async with self._localpart_lock:
            if self._next_localpart is None:
                self._next_localpart = await self._db.read(_max_numeric_localpart) + 1
            for _ in range(LOCALPART_TRIES):
                localpart = str(self._next_localpart)
                self._next_localpart += 1
                user_id = self._accounts.check_new_localpart(localpart)
                if await self._db.write(_insert_guest, user_id, localpart, int(time.time())):
                    return user_id
                # Taken (e.g. by an admin since): continue after the largest one now.
                latest = await self._db.read(_max_numeric_localpart) + 1
                self._next_localpart = max(self._next_localpart, latest)
        raise MatrixError(500, "M_UNKNOWN", "could not find a free guest user ID")

    async def check_upgrade(self, guest_access_token: str, username: str | None) -> str:
        """The guest account that ``POST /register`` with ``guest_access_token`` upgrades.

        Args:
            guest_access_token: the guest's access token.
            username: the ``username`` of the request, if any: it must be the guest's
                localpart (the spec makes it required; absent, the guest's is used).

        Returns:
            The guest's user ID.

        Raises:
            MatrixError: 401 ``M_UNKNOWN_TOKEN`` for an unknown token; 403 ``M_FORBIDDEN``
                if the account is not a guest or ``username`` names another account
                (Synapse's ``check_username``).
        """
        requester = await self._accounts.authenticate(guest_access_token)
        if not requester.is_guest:
            raise forbidden("guest_access_token is not the access token of a guest account")
        if username is not None and f"@{username}:{self._accounts.server_name}" != (
            requester.user_id
        ):
            raise forbidden("a guest can only be upgraded to its own user ID")
        return requester.user_id

    async def upgrade(self, user_id: str, password: str) -> None:
        """Turn the guest account into a full one with ``password``.

        The guest's access tokens stop working (as Synapse's guest tokens do once the
        account is no longer a guest); its devices stay, so a client that registers
        with its guest ``device_id`` keeps that device and its keys.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if it is no longer a guest account.
        """
        password_hash = await self._accounts.hash_password(password)
        hashes = await self._db.write(_upgrade_guest, user_id, password_hash)
        if hashes is None:
            raise forbidden("that account is no longer a guest account")
        self._accounts.forget_tokens(hashes)
        self._upgraded += 1
        log.info("upgraded guest %s to a full account", user_id)

    # --- joins -------------------------------------------------------------------------

    async def check_join(self, requester: Requester, room_id: str) -> None:
        """Let a guest join only a room whose ``m.room.guest_access`` is ``can_join``.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` (Synapse: "Guest access not allowed").
        """
        if not requester.is_guest:
            return
        if not await self.can_guests_join(room_id):
            raise forbidden("guests may not join this room (its guest access is not can_join)")
        key = (room_id, requester.user_id)
        self._pending[key] = None
        self._pending.move_to_end(key)
        while len(self._pending) > PENDING_JOINS:
            self._pending.popitem(last=False)

    async def can_guests_join(self, room_id: str) -> bool:
        event_id = await self._db.read(
            state_store.get_current_state_event_id, room_id, GUEST_ACCESS, ""
        )
        if event_id is None:
            return False
        event = (await self._rooms.reader.get_events([event_id])).get(event_id)
        content = event.pdu.get("content") if event is not None else None
        return isinstance(content, Mapping) and content.get("guest_access") == CAN_JOIN

    # --- removing guests ---------------------------------------------------------------

    def on_persisted(self, event: PersistedEvent) -> None:
        """Room writer listener (never blocks): queue rooms whose guests may have to go."""
        if not event.accepted or not event.state_changed:
            return
        pdu = event.pdu
        event_type = pdu.get("type")
        if event_type == GUEST_ACCESS and pdu.get("state_key") == "":
            content = pdu.get("content")
            if not isinstance(content, Mapping) or content.get("guest_access") != CAN_JOIN:
                self._queue(event.room_id)
        elif event_type == MEMBER and self._pending:
            key = (event.room_id, str(pdu.get("state_key")))
            if key in self._pending:
                del self._pending[key]
                self._queue(event.room_id)

    def _queue(self, room_id: str) -> None:
        if room_id in self._queued:
            return
        try:
            self._send.send_nowait(room_id)
        except trio.WouldBlock:
            self._dropped += 1
            log.warning("guest removal queue full: guests of %s stay in the room", room_id)
            return
        self._queued.add(room_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Remove guests from the queued rooms until cancelled."""
        task_status.started()
        async for room_id in self._receive:
            self._queued.discard(room_id)
            try:
                await self.remove_guests(room_id)
            except Exception:  # one room's failure must not stop the others
                log.exception("removing guests from %s failed", room_id)

    async def remove_guests(self, room_id: str) -> list[str]:
        """Make every local guest member (joined or invited) of the room leave, unless
        guests may join it. Returns the guests who left."""
        if await self.can_guests_join(room_id):
            return []
        left: list[str] = []
        for user_id in await self._db.read(_guest_members, room_id):
            try:
                await self._rooms.membership(user_id, room_id, user_id, "leave")
            except MatrixError as e:
                log.info("guest %s could not leave %s: %s", user_id, room_id, e.error)
                continue
            left.append(user_id)
        if left:
            self._removed += len(left)
            log.info("guest access to %s ended: %d guest(s) left", room_id, len(left))
        return left


# --- storage (guest-only statements on users, devices and current_state) ---------------


def _max_numeric_localpart(conn: sqlite3.Connection) -> int:
    """The largest all-digit localpart of an account, 0 if none."""
    row = conn.execute(
        "SELECT substr(name, 2, instr(name, ':') - 2) AS lp FROM users"
        " WHERE name GLOB '@[0-9]*:*' AND lp NOT GLOB '*[^0-9]*'"
        " ORDER BY length(lp) DESC, lp DESC LIMIT 1"
    ).fetchone()
    return int(row[0]) if row else 0


def _insert_guest(conn: sqlite3.Connection, user_id: str, localpart: str, now_s: int) -> bool:
    """Create the guest account and its profile; False if the user ID is taken."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO users (name, password_hash, creation_ts, is_guest)"
        " VALUES (?, NULL, ?, 1)",
        (user_id, now_s),
    )
    if cur.rowcount != 1:
        return False
    profile_store.set_profile_field(conn, user_id, "displayname", localpart)
    return True


def _upgrade_guest(
    conn: sqlite3.Connection, user_id: str, password_hash: str
) -> list[bytes] | None:
    """Clear ``is_guest``, set the password and delete the guest's access tokens;
    None if the account is not (or no longer) an active guest."""
    cur = conn.execute(
        "UPDATE users SET password_hash = ?, is_guest = 0"
        " WHERE name = ? AND is_guest = 1 AND deactivated = 0",
        (password_hash, user_id),
    )
    if cur.rowcount != 1:
        return None
    hashes = device_store.token_hashes_for_user(conn, user_id)
    conn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
    return hashes


def _guest_members(conn: sqlite3.Connection, room_id: str) -> list[str]:
    """Local guest accounts joined to or invited into the room (current state)."""
    rows = conn.execute(
        "SELECT c.state_key FROM current_state c JOIN users u ON u.name = c.state_key"
        " WHERE c.room_id = ? AND c.type = 'm.room.member'"
        " AND c.membership IN ('join', 'invite') AND u.is_guest = 1",
        (room_id,),
    )
    return [r[0] for r in rows]
