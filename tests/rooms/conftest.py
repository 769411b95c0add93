"""Fixtures for the room DAG and the writer: a real SQLite database, the writer, and a
"remote server" that builds and signs PDUs for any room version."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import VerifyKey

from pocketserver.cache import MemoryBudget
from pocketserver.core.auth_rules import auth_types_for_event
from pocketserver.core.crypto import (
    add_hashes_and_signatures,
    compute_reference_hash,
    generate_signing_key,
    get_verify_key,
    key_id,
)
from pocketserver.core.events import compute_event_id, compute_room_id_v12
from pocketserver.core.room_versions import get_room_version
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import PersistedEvent, RoomWriter
from pocketserver.storage import events as event_store
from pocketserver.storage import state as state_store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

LOCAL = "local.test"
REMOTE = "remote.test"
ALICE = f"@alice:{LOCAL}"
BOB = f"@bob:{LOCAL}"
CAROL = f"@carol:{LOCAL}"
RBOB = f"@bob:{REMOTE}"
RCAROL = f"@carol:{REMOTE}"
ALL_VERSIONS = [str(n) for n in range(1, 13)]

Pdu = dict[str, Any]
StateKey = tuple[str, str]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    # synchronous=normal: the tests check logic, not durability; fsyncs would be slow.
    database = Database(tmp_path / "rooms.db", memory_bytes=16 << 20, synchronous="normal")
    yield database
    database.close()


@pytest.fixture
def budget() -> MemoryBudget:
    return MemoryBudget(64 << 20)


@pytest.fixture
def store(db: Database, budget: MemoryBudget) -> RoomStore:
    return RoomStore(db, budget)


@pytest.fixture
def notifier() -> Notifier:
    return Notifier()


@pytest.fixture
def writer(store: RoomStore, notifier: Notifier) -> RoomWriter:
    return RoomWriter(store, LOCAL, generate_signing_key("a_1"), notifier)


@pytest.fixture
def remote() -> RemoteServer:
    return RemoteServer(REMOTE)


# --- reading the database directly ---------------------------------------------------


def rows(db: Database, sql: str, *args: object) -> list[tuple[Any, ...]]:
    def run(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in conn.execute(sql, args)]

    return db.read_sync(run)


def event_count(db: Database) -> int:
    return int(rows(db, "SELECT count(*) FROM events")[0][0])


def extremities(db: Database, room_id: str) -> set[str]:
    return {eid for eid, _ in db.read_sync(event_store.get_forward_extremities, room_id)}


def current_state(db: Database, room_id: str) -> dict[StateKey, str]:
    return db.read_sync(state_store.get_current_state_ids, room_id)


def stored(db: Database, event_id: str) -> event_store.StoredEvent:
    ev = db.read_sync(event_store.get_event, event_id)
    assert ev is not None, f"{event_id} is not stored"
    return ev


def state_after(db: Database, event_id: str) -> dict[StateKey, str]:
    group = stored(db, event_id).state_after
    return {} if group is None else db.read_sync(state_store.get_group_state, group)


def state_before(db: Database, event_id: str) -> dict[StateKey, str]:
    group = stored(db, event_id).state_before
    return {} if group is None else db.read_sync(state_store.get_group_state, group)


# --- a remote server ---------------------------------------------------------------------


class RemoteServer:
    """Another homeserver: its own signing key; builds and signs PDUs in any room version.

    It remembers every PDU it built (``pdus``), so it can cite events the writer has not
    seen yet (for v1/v2 edges it needs their reference hashes).
    """

    def __init__(self, name: str, key_version: str = "r_1") -> None:
        self.name = name
        self.signing_key = generate_signing_key(key_version)
        self.verify_key = get_verify_key(self.signing_key)
        self.pdus: dict[str, Pdu] = {}
        self._n = 0

    @property
    def keys(self) -> dict[str, dict[str, VerifyKey]]:
        return {self.name: {key_id(self.verify_key): self.verify_key}}

    def keys_with(self, writer: RoomWriter) -> dict[str, dict[str, VerifyKey]]:
        """Our keys and the writer's (to re-receive events the writer made)."""
        local = get_verify_key(writer._signing_key)
        return {**self.keys, writer.server_name: {key_id(local): local}}

    def _edges(self, room_version: str, ids: Sequence[str], known: Mapping[str, Pdu]) -> list[Any]:
        if not get_room_version(room_version).event_ids_in_pdu:
            return list(ids)
        return [[e, {"sha256": compute_reference_hash(known[e], room_version)}] for e in ids]

    def sign(self, pdu: Pdu, room_version: str) -> tuple[str, Pdu]:
        signed = add_hashes_and_signatures(pdu, room_version, self.name, self.signing_key)
        event_id = compute_event_id(signed, room_version)
        self.pdus[event_id] = signed
        return event_id, signed

    def build(
        self,
        room_version: str,
        room_id: str,
        sender: str,
        etype: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prev: Sequence[str],
        auth: Sequence[str],
        depth: int,
        known: Mapping[str, Pdu] = {},
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[str, Pdu]:
        """Build and sign one PDU; ``known`` holds the PDUs of the cited events."""
        lookup = {**self.pdus, **known}
        pdu: Pdu = {
            "type": etype,
            "room_id": room_id,
            "sender": sender,
            "content": dict(content),
            "origin_server_ts": int(time.time() * 1000),
            "depth": depth,
            "prev_events": self._edges(room_version, prev, lookup),
            "auth_events": self._edges(room_version, auth, lookup),
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if get_room_version(room_version).event_ids_in_pdu:
            self._n += 1
            pdu["event_id"] = f"$r{self._n}_{time.monotonic_ns()}:{self.name}"
            pdu["origin"] = self.name
        pdu.update(extra or {})
        return self.sign(pdu, room_version)

    def create_room(self, room_version: str, creator: str) -> tuple[str, str, Pdu]:
        """A room created on this server: (room_id, create event ID, create PDU)."""
        version = get_room_version(room_version)
        content: dict[str, Any] = {"room_version": room_version}
        if not version.implicit_room_creator:
            content["creator"] = creator
        pdu: Pdu = {
            "type": "m.room.create",
            "state_key": "",
            "sender": creator,
            "content": content,
            "origin_server_ts": int(time.time() * 1000),
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
        }
        if version.event_ids_in_pdu:
            self._n += 1
            pdu["event_id"] = f"$create{self._n}:{self.name}"
        if not version.hydra:
            self._n += 1
            pdu["room_id"] = f"!room{self._n}_{time.monotonic_ns()}:{self.name}"
        event_id, signed = self.sign(pdu, room_version)
        room_id = compute_room_id_v12(signed) if version.hydra else str(pdu["room_id"])
        return room_id, event_id, signed

    async def event(
        self,
        writer: RoomWriter,
        room_id: str,
        sender: str,
        etype: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        prev: Sequence[str] | None = None,
        state: Mapping[StateKey, str] | None = None,
        auth: Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[str, Pdu]:
        """Build an event in a room the writer knows: by default on top of its forward
        extremities, citing auth events from its current state (or ``state``)."""
        store = writer.store
        room_version = await store.room_version(room_id)
        assert room_version is not None
        if prev is None:
            ext = await store.db.read(event_store.get_forward_extremities, room_id)
            prev = [e for e, _ in ext]
        if state is None:
            state = await store.current_state_ids(room_id)
        skeleton = {"type": etype, "sender": sender, "content": content, "state_key": state_key}
        if auth is None:
            auth = [state[k] for k in auth_types_for_event(room_version, skeleton) if k in state]
        known_events = await store.get_events([*prev, *auth])
        known = {**self.pdus, **{eid: ev.pdu for eid, ev in known_events.items()}}
        depths = [ev.depth for ev in known_events.values()]
        depths += [int(self.pdus[p]["depth"]) for p in prev if p in self.pdus]
        return self.build(
            room_version,
            room_id,
            sender,
            etype,
            content,
            state_key=state_key,
            prev=prev,
            auth=auth,
            depth=max(depths, default=0) + 1,
            known=known,
            extra=extra,
        )

    async def send(
        self,
        writer: RoomWriter,
        room_id: str,
        sender: str,
        etype: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        **kwargs: Any,
    ) -> PersistedEvent:
        """Build an event like :meth:`event` and hand it to ``writer.receive_pdu``."""
        _, pdu = await self.event(writer, room_id, sender, etype, content, state_key, **kwargs)
        version = await writer.store.room_version(room_id)
        assert version is not None
        return await writer.receive_pdu(pdu, version, self.keys)
