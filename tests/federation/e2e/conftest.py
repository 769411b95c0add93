"""In-process fixtures for the E2EE part of federation: a real database with local
users, a room that a user of ``remote.test`` joined through the room writer, and fake
remote servers answering through the federation client Protocol."""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio

from pocketserver.cache import MemoryBudget
from pocketserver.core.crypto import generate_signing_key
from pocketserver.e2e.keys import E2eKeys
from pocketserver.e2e.stream import DeviceListStream
from pocketserver.federation.e2e.service import FederationE2e
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import device_lists
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier
from pocketserver.to_device.service import ToDeviceService
from tests.e2e_keys.keys import device_keys
from tests.rooms.conftest import RemoteServer

LOCAL = "local.test"
REMOTE = "remote.test"
EVIL = "evil.test"
ALICE = f"@alice:{LOCAL}"
BOB = f"@bob:{LOCAL}"
RBOB = f"@bob:{REMOTE}"
RCAROL = f"@carol:{REMOTE}"
EVE = f"@eve:{EVIL}"


class Unreachable(Exception):
    """What the fake client raises for a server that does not answer."""


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[[Any], Any]


@dataclass
class FakeRemotes:
    """Other servers as seen through ``FederationRequests``: a handler per (method,
    server, path); no handler is unreachable; servers in ``hang`` never answer."""

    handlers: dict[tuple[str, str, str], Handler] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    calls: list[tuple[str, str, str, Any, float]] = field(default_factory=list)

    def on(self, method: str, server: str, path: str, handler: Handler) -> None:
        self.handlers[(method, server, path)] = handler

    def called(self, method: str, path_start: str) -> list[tuple[str, str, str, Any, float]]:
        return [c for c in self.calls if c[0] == method and c[2].startswith(path_start)]

    async def _answer(
        self, method: str, server: str, path: str, body: Any, timeout_s: float
    ) -> Any:
        self.calls.append((method, server, path, copy.deepcopy(body), timeout_s))
        await trio.lowlevel.checkpoint()
        if server in self.hang:
            await trio.sleep_forever()
        handler = self.handlers.get((method, server, path))
        if handler is None:
            raise Unreachable(f"cannot connect to {server}")
        result = handler(body)
        if isinstance(result, Exception):
            raise result
        return copy.deepcopy(result)

    async def get_json(self, destination: str, path: str, *, timeout_s: float) -> Any:
        return await self._answer("GET", destination, path, None, timeout_s)

    async def post_json(
        self, destination: str, path: str, content: object, *, timeout_s: float
    ) -> Any:
        return await self._answer("POST", destination, path, content, timeout_s)


def add_user(conn: sqlite3.Connection, user_id: str, *devices: tuple[str, str | None]) -> None:
    conn.execute("INSERT OR IGNORE INTO users (name, creation_ts) VALUES (?, 0)", (user_id,))
    for device_id, name in devices:
        conn.execute(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts)"
            " VALUES (?, ?, ?, 0)",
            (user_id, device_id, name),
        )


@dataclass
class Env:
    db: Database
    notifier: Notifier
    writer: RoomWriter
    remote: RemoteServer
    remotes: FakeRemotes
    stream: DeviceListStream
    to_device: ToDeviceService
    keys: E2eKeys
    fed: FederationE2e
    room_id: str
    remote_sk: nacl.signing.SigningKey

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return self.db.read_sync(lambda c: [tuple(r) for r in c.execute(sql, args)])

    def changed_for(self, user_id: str, since: int) -> list[str]:
        """``device_lists.changed`` that ``user_id`` would see for list changes after
        ``since``."""
        upto = self.stream.position()
        found = self.db.read_sync(device_lists.delta, user_id, 0, 0, since, upto)
        return found.changed

    def remote_devices_answer(
        self, user_id: str, stream_id: object, *device_ids: str, **extra: Any
    ) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "stream_id": stream_id,
            "devices": [
                {"device_id": d, "keys": device_keys(user_id, d, self.remote_sk)}
                for d in device_ids
            ],
            **extra,
        }

    async def join_remote(self, user_id: str, room_id: str | None = None) -> None:
        await self.remote.send(
            self.writer,
            room_id or self.room_id,
            user_id,
            "m.room.member",
            {"membership": "join"},
            user_id,
        )

    async def leave_remote(self, user_id: str) -> None:
        await self.remote.send(
            self.writer, self.room_id, user_id, "m.room.member", {"membership": "leave"}, user_id
        )


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 (polls the database, which has no event)
            await trio.sleep(0.01)


@pytest.fixture
async def env(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Env]:
    db = Database(tmp_path / "e2efed.db", memory_bytes=8 << 20, synchronous="normal")
    db.write_sync(add_user, ALICE, ("A1", "Alice's phone"), ("A2", None))
    db.write_sync(add_user, BOB, ("B1", None))
    notifier = Notifier()
    store = RoomStore(db, MemoryBudget(32 << 20))
    writer = RoomWriter(store, LOCAL, generate_signing_key("a_1"), notifier)
    remote = RemoteServer(REMOTE)
    remotes = FakeRemotes()
    stream = await DeviceListStream.open(db, notifier)
    to_device = await ToDeviceService.open(db, notifier, LOCAL)
    keys, fed = FederationE2e.build(db, stream, LOCAL, to_device, remotes)
    room_id = await create_room(
        writer, ALICE, RoomSettings(room_version="10", preset="public_chat")
    )
    e = Env(
        db,
        notifier,
        writer,
        remote,
        remotes,
        stream,
        to_device,
        keys,
        fed,
        room_id,
        nacl.signing.SigningKey.generate(),
    )
    await e.join_remote(RBOB)
    await nursery.start(fed.run)
    yield e
    db.close()
