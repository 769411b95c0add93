"""Send-to-device messaging: queue messages in devices' inboxes, publish the stream.

Spec: client-server-api modules/send_to_device.md and to_device.yaml. A send is one
write transaction that checks the transaction ID, expands ``*`` to the user's devices
at that moment, skips unknown users and devices (as the spec says), queues one message
per device and takes the next to-device stream position; once committed, the position
is published to the notifier so waiting syncs wake.

Memory and disk are bounded: each message's content is at most ``MAX_CONTENT_BYTES``
(the request is refused ``413 M_TOO_LARGE`` otherwise) and each device's inbox holds
at most ``max_inbox`` messages (past that the oldest are dropped, with a log line).

Remote users: messages for users on other servers are handed to
:attr:`ToDeviceService.remote`, which by default queues nothing and logs it; the
federation sender plugs in there. Messages from other servers' users arrive through
:meth:`ToDeviceService.receive_remote` (``m.direct_to_device`` EDUs, idempotent per
origin and ``message_id``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection, Mapping

import trio

from pocketserver.core.identifiers import get_domain, is_valid_user_id
from pocketserver.core.locality import Locality
from pocketserver.errors import MatrixError, bad_json, invalid_param
from pocketserver.storage import remote_devices
from pocketserver.storage import to_device as store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

log = logging.getLogger(__name__)

STREAM = "to_device"
MAX_CONTENT_BYTES = 64 * 1024
"""The largest content of one message (compact JSON, UTF-8)."""
MAX_INBOX = 1000
"""Messages kept per device; past this the oldest are dropped."""
MAX_TYPE_LENGTH = 255
MAX_TXN_ID_LENGTH = 255
TXN_MAX_AGE_MS = 24 * 60 * 60 * 1000
"""How long a transaction ID is remembered (retries come within seconds or minutes)."""

RemoteMessages = dict[str, dict[str, dict[str, object]]]
"""user ID -> device ID (or ``*``) -> content, for users of one other server."""
RemoteSender = Callable[[str, str, str, RemoteMessages], Awaitable[None]]
"""``(sender, event_type, destination, messages)``: hand messages to federation; returns
once they are stored to be sent (the federation sender's outbox)."""


def _encode(content: Mapping[str, object]) -> str:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


def _receive_txn(
    conn: sqlite3.Connection,
    origin: str,
    message_id: str,
    sender: str,
    event_type: str,
    local: list[tuple[str, str, str]],
    max_inbox: int,
) -> store.SendResult | None:
    if not remote_devices.first_sight_of_message(
        conn, origin, message_id, _now_ms(), TXN_MAX_AGE_MS
    ):
        return None
    return store.deliver(conn, sender, event_type, local, max_inbox)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _no_federation(
    sender: str, event_type: str, destination: str, messages: RemoteMessages
) -> None:
    log.info(
        "to-device %s from %s for %d user(s) on %s not sent: federation is not available",
        event_type,
        sender,
        len(messages),
        destination,
    )
    await trio.lowlevel.checkpoint()


class ToDeviceService:
    """Queues send-to-device messages and knows the stream's committed position.

    Build it with :meth:`open`, which learns the position from the database.
    """

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        server_name: str,
        position: int,
        *,
        max_inbox: int = MAX_INBOX,
        remote: RemoteSender | None = None,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.server_name = server_name
        self.locality = Locality(server_name)
        self.max_inbox = max_inbox
        self.remote: RemoteSender = remote if remote is not None else _no_federation
        """Where messages for remote users go (the federation sender replaces this)."""
        self._position = position
        notifier.notify_stream(STREAM, position)

    @classmethod
    async def open(
        cls,
        db: Database,
        notifier: Notifier,
        server_name: str,
        *,
        max_inbox: int = MAX_INBOX,
        remote: RemoteSender | None = None,
    ) -> ToDeviceService:
        position = await db.read(store.stream_position)
        return cls(db, notifier, server_name, position, max_inbox=max_inbox, remote=remote)

    def position(self) -> int:
        """The to-device stream's committed position."""
        return self._position

    async def send(
        self,
        sender: str,
        sender_device: str,
        event_type: str,
        txn_id: str,
        messages: object,
    ) -> None:
        """Send ``messages`` (the request's ``messages`` object) once per transaction ID.

        Raises:
            MatrixError: 400 ``M_BAD_JSON`` / ``M_INVALID_PARAM`` for a malformed
                ``messages``, 413 ``M_TOO_LARGE`` for a content past the size limit.
                Nothing is sent then.
        """
        if not event_type or len(event_type) > MAX_TYPE_LENGTH:
            raise invalid_param("bad event type")
        if len(txn_id) > MAX_TXN_ID_LENGTH:
            raise invalid_param("transaction ID too long")
        local, remote = self._parse(messages)
        result = await self.db.write(
            store.send,
            sender,
            sender_device,
            event_type,
            txn_id,
            local,
            _now_ms(),
            self.max_inbox,
            TXN_MAX_AGE_MS,
        )
        if result is None:
            return  # a retry: already sent
        for (user_id, device_id), count in result.dropped.items():
            log.warning(
                "to-device inbox of %s %s is full (%d): dropped %d oldest message(s)",
                user_id,
                device_id,
                self.max_inbox,
                count,
            )
        self._committed(result.position, {user_id for user_id, _, _ in local})
        for destination, batch in remote.items():
            await self.remote(sender, event_type, destination, batch)

    def _parse(
        self, messages: object
    ) -> tuple[list[tuple[str, str, str]], dict[str, RemoteMessages]]:
        """Split ``messages`` into local ``(user, device, encoded content)`` and remote
        batches per server, checking every part first."""
        if not isinstance(messages, dict):
            raise bad_json("messages must be an object")
        local: list[tuple[str, str, str]] = []
        remote: dict[str, RemoteMessages] = {}
        for user_id, devices in messages.items():
            if not is_valid_user_id(user_id):
                raise invalid_param(f"not a user ID: {user_id!r}")
            if not isinstance(devices, dict):
                raise bad_json("messages must map user IDs to objects of device IDs")
            domain = get_domain(user_id)
            mine = self.locality.is_mine(user_id)
            for device_id, content in devices.items():
                if not isinstance(content, dict):
                    raise bad_json("each message must be an object")
                encoded = _encode(content)
                if len(encoded.encode("utf-8")) > MAX_CONTENT_BYTES:
                    raise MatrixError(
                        413, "M_TOO_LARGE", f"a message is larger than {MAX_CONTENT_BYTES} bytes"
                    )
                if mine:
                    local.append((user_id, device_id, encoded))
                else:
                    remote.setdefault(domain, {}).setdefault(user_id, {})[device_id] = content
        return local, remote

    async def receive_remote(
        self,
        origin: str,
        message_id: str,
        sender: str,
        event_type: str,
        messages: Mapping[str, Mapping[str, Mapping[str, object]]],
    ) -> int:
        """Deliver an ``m.direct_to_device`` EDU's messages to local devices, once per
        ``(origin, message_id)``; return how many devices got one.

        The caller (:mod:`pocketserver.federation.e2e.inbound`) checked that the sender
        belongs to ``origin``. Users of other servers, malformed entries and contents
        past :data:`MAX_CONTENT_BYTES` are skipped.
        """
        local: list[tuple[str, str, str]] = []
        for user_id, devices in messages.items():
            if not is_valid_user_id(user_id) or user_id.split(":", 1)[1] != self.server_name:
                continue
            if not isinstance(devices, Mapping):
                continue
            for device_id, content in devices.items():
                if not isinstance(device_id, str) or not isinstance(content, Mapping):
                    continue
                encoded = _encode(content)
                if len(encoded.encode("utf-8")) <= MAX_CONTENT_BYTES:
                    local.append((user_id, device_id, encoded))
        if not local:
            return 0
        result = await self.db.write(
            _receive_txn, origin, message_id, sender, event_type, local, self.max_inbox
        )
        if result is None:
            return 0  # a retried transaction: delivered already
        self._committed(result.position, {u for u, _, _ in local})
        return result.delivered

    def _committed(self, position: int, users: Collection[str]) -> None:
        self._position = max(self._position, position)
        self.notifier.notify_stream(STREAM, self._position, users=users)

    async def pending(
        self, user_id: str, device_id: str, since: int | None, upto: int, limit: int
    ) -> store.Pending:
        """The device's first ``limit`` messages in ``(since, upto]``; messages at or
        below ``since`` (delivered by an earlier response) are deleted first."""
        found = await self.db.read(store.pending, user_id, device_id, since, upto, limit)
        if found.acknowledged and since is not None:
            await self.db.write(store.delete_delivered, user_id, device_id, since)
        return found
