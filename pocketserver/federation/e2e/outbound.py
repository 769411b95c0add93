"""Our users' device list and cross-signing key changes, handed to the federation
sender as EDUs for the servers that share a room with them.

Spec: server-server-api.md "Device Management": one ``m.device_list_update`` per
changed device, with a ``stream_id`` unique per user and ``prev_id`` naming the
previous update, so that a server holding our list applies it as a delta; and
``m.signing_key_update`` for new master or self-signing keys ("End-to-End
Encryption"). Our stream IDs are positions on the device list stream: a device change
is its row, ``prev_id`` the user's previous device change row, and ``GET
/user/devices`` serves the latest one, so a server that resynced recognises the next
update (:mod:`pocketserver.federation.e2e.serving`). A user's first update has no
``prev_id``, which makes the peer resync.

:class:`DeviceListPublisher` follows the stream from a position stored in SQLite, so a
restart neither loses nor repeats changes (the sender stores what it is handed before
returning). Changes only one user may see (their user-signing key) are never sent.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import trio

from pocketserver.e2e.keys import with_signatures
from pocketserver.e2e.stream import DeviceListStream
from pocketserver.storage import e2e_keys as store
from pocketserver.storage.db import Database

log = logging.getLogger(__name__)

BATCH = 100
"""Stream rows read at a time."""
RETRY_MIN_S = 5.0
RETRY_MAX_S = 300.0


class DeviceListSender(Protocol):
    """The federation sender's EDU API (pocketserver.federation.sender)."""

    async def send_device_list_update(self, content: Mapping[str, object]) -> None:
        """Queue an ``m.device_list_update`` for the servers sharing a room with
        ``content["user_id"]``; returns once it is stored."""
        ...

    async def send_signing_key_update(self, content: Mapping[str, object]) -> None:
        """Queue ``m.signing_key_update`` (and its unstable twin) likewise."""
        ...


@dataclass(frozen=True, slots=True)
class OutboundEdu:
    edu_type: str
    content: dict[str, object]


def _device_update(
    conn: sqlite3.Connection, user_id: str, device_id: str, stream_id: int, names: bool
) -> dict[str, object]:
    prev = store.last_device_change(conn, user_id, before=stream_id)
    content: dict[str, object] = {
        "user_id": user_id,
        "device_id": device_id,
        "stream_id": stream_id,
        "prev_id": [prev] if prev else [],
    }
    row = conn.execute(
        "SELECT display_name FROM devices WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    ).fetchone()
    if row is None:
        content["deleted"] = True
        return content
    if names and row[0]:
        content["device_display_name"] = row[0]
    keys = store.get_device_keys(conn, user_id, device_id)
    if keys is not None:
        signatures = store.signatures_for(conn, [user_id], "")
        content["keys"] = with_signatures(keys, signatures.get((user_id, device_id)))
    return content


def _signing_key_update(conn: sqlite3.Connection, user_id: str) -> dict[str, object] | None:
    keys = store.cross_signing_keys(conn, [user_id]).get(user_id, {})
    content: dict[str, object] = {"user_id": user_id}
    if "master" in keys:
        master = keys["master"]
        signatures = store.signatures_for(conn, [user_id], "")
        content["master_key"] = with_signatures(
            master.key, signatures.get((user_id, master.public_key))
        )
    if "self_signing" in keys:
        content["self_signing_key"] = keys["self_signing"].key
    return content if len(content) > 1 else None


def pending_edus(
    conn: sqlite3.Connection, after: int, limit: int, display_names: bool
) -> tuple[list[OutboundEdu], int]:
    """The EDUs for our users' public changes in the next ``limit`` stream rows after
    ``after``, and the position they reach."""
    rows = conn.execute(
        "SELECT c.stream_id, c.user_id, c.device_id, c.only_for,"
        " EXISTS (SELECT 1 FROM users u WHERE u.name = c.user_id)"
        " FROM e2e_device_list_changes c WHERE c.stream_id > ? ORDER BY c.stream_id LIMIT ?",
        (after, limit),
    ).fetchall()
    edus: list[OutboundEdu] = []
    for stream_id, user_id, device_id, only_for, local in rows:
        if only_for is not None or not local:
            continue  # private to one user, or a remote user's change we applied
        if device_id is not None:
            content = _device_update(conn, user_id, device_id, int(stream_id), display_names)
            edus.append(OutboundEdu("m.device_list_update", content))
        elif (keys := _signing_key_update(conn, user_id)) is not None:
            edus.append(OutboundEdu("m.signing_key_update", keys))
    return edus, int(rows[-1][0]) if rows else after


def _published(conn: sqlite3.Connection) -> int:
    """The stored position, starting at the stream's end the first time (changes made
    before federation was set up are not sent)."""
    row = conn.execute("SELECT position FROM federation_device_list_published").fetchone()
    if row is not None:
        return int(row[0])
    position = store.stream_position(conn)
    conn.execute(
        "INSERT INTO federation_device_list_published (id, position) VALUES (1, ?)", (position,)
    )
    return position


def _stored(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT position FROM federation_device_list_published").fetchone()
    return int(row[0]) if row is not None else 0


def _save(conn: sqlite3.Connection, position: int) -> None:
    conn.execute("UPDATE federation_device_list_published SET position = ?", (position,))


class DeviceListPublisher:
    def __init__(
        self,
        db: Database,
        stream: DeviceListStream,
        sender: DeviceListSender,
        *,
        display_names: bool = False,
    ) -> None:
        self.db = db
        self.stream = stream
        self.sender = sender
        self.display_names = display_names
        self._poked = trio.Event()
        stream.listeners.append(self.poke)

    def poke(self, *_: object) -> None:
        """The stream moved (never blocks)."""
        self._poked.set()

    async def publish_pending(self, position: int) -> int:
        """Hand the EDUs after ``position`` to the sender; return the new position.

        Raises:
            Exception: whatever the sender raised (nothing past the failure is saved).
        """
        while True:
            edus, reached = await self.db.read(pending_edus, position, BATCH, self.display_names)
            for edu in edus:
                if edu.edu_type == "m.device_list_update":
                    await self.sender.send_device_list_update(edu.content)
                else:
                    await self.sender.send_signing_key_update(edu.content)
            if reached == position:
                return position
            await self.db.write(_save, reached)
            position = reached

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the stream until cancelled; a failing sender is retried with backoff."""
        position = await self.db.write(_published)
        task_status.started()
        delay = RETRY_MIN_S
        while True:
            while self.stream.position() <= position:
                await self._poked.wait()
                self._poked = trio.Event()
            try:
                position = await self.publish_pending(position)
                delay = RETRY_MIN_S
            except Exception:
                log.exception("could not hand device list updates to the sender")
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                position = await self.db.read(_stored)
