"""Redactions applied on read, and censoring after the retention period (real SQLite)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pocketserver.cache import MemoryBudget
from pocketserver.core.crypto import generate_signing_key
from pocketserver.errors import MatrixError
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.retention import RedactionCensor
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

ALICE, BOB = "@alice:example.org", "@bob:example.org"


@pytest.fixture
def db(tmp_path: Path):
    database = Database(tmp_path / "rooms.db", memory_bytes=16 << 20)
    yield database
    database.close()


@pytest.fixture
def writer(db: Database) -> RoomWriter:
    store = RoomStore(db, MemoryBudget(64 << 20))
    return RoomWriter(store, "example.org", generate_signing_key("a_test"), Notifier())


async def _room(writer: RoomWriter, version: str) -> str:
    room = await create_room(
        writer, ALICE, RoomSettings(room_version=version, preset="public_chat")
    )
    await writer.send_event(room, BOB, "m.room.member", {"membership": "join"}, BOB)
    return room


@pytest.mark.parametrize("version", ["1", "6", "10", "11", "12"])
async def test_redaction_applied_on_read_original_kept(writer: RoomWriter, db, version) -> None:
    room = await _room(writer, version)
    msg = await writer.send_event(
        room, BOB, "m.room.message", {"msgtype": "m.text", "body": "oops"}
    )
    red = await writer.send_event(
        room, BOB, "m.room.redaction", {"reason": "typo"}, redacts=msg.event_id
    )
    reader = EventReader(writer.store)
    seen = await reader.get_events([msg.event_id, red.event_id])
    assert seen[msg.event_id].pdu["content"] == {}
    assert seen[msg.event_id].redacted_because is not None
    assert seen[msg.event_id].redacted_because["sender"] == BOB
    assert seen[red.event_id].redacted_because is None
    # The original is still stored (until the retention period passes).
    conn = sqlite3.connect(db.path)
    stored = json.loads(
        conn.execute("SELECT json FROM events WHERE event_id = ?", (msg.event_id,)).fetchone()[0]
    )
    assert stored["content"]["body"] == "oops"


async def test_v1_same_domain_local_redaction_needs_own_event(writer: RoomWriter) -> None:
    """rooms/v1 auth rule 11 lets a member below the redact level redact an event whose
    ID has the redaction's domain (here: every event is local), and a reader applies
    such a redaction from another server; a local client still may only redact its own
    events (core/client_actions.py), so the message stays as it was."""
    room = await _room(writer, "1")
    msg = await writer.send_event(room, ALICE, "m.room.message", {"body": "mine"})
    with pytest.raises(MatrixError) as err:
        await writer.send_event(room, BOB, "m.room.redaction", {}, redacts=msg.event_id)
    assert (err.value.status, err.value.errcode) == (403, "M_FORBIDDEN")
    reader = EventReader(writer.store)
    assert (await reader.get_events([msg.event_id]))[msg.event_id].pdu["content"] == {
        "body": "mine"
    }
    own = await writer.send_event(room, BOB, "m.room.message", {"body": "his"})
    await writer.send_event(room, BOB, "m.room.redaction", {}, redacts=own.event_id)
    assert (await reader.get_events([own.event_id]))[own.event_id].pdu["content"] == {}


async def test_non_member_cannot_redact(writer: RoomWriter) -> None:
    room = await _room(writer, "10")
    msg = await writer.send_event(room, ALICE, "m.room.message", {"body": "mine"})
    with pytest.raises(MatrixError) as err:
        await writer.send_event(
            room, "@eve:example.org", "m.room.redaction", {}, redacts=msg.event_id
        )
    assert err.value.errcode == "M_FORBIDDEN"
    reader = EventReader(writer.store)
    assert (await reader.get_events([msg.event_id]))[msg.event_id].pdu["content"] == {
        "body": "mine"
    }


async def test_censor_after_retention(writer: RoomWriter, db: Database) -> None:
    room = await _room(writer, "10")
    msg = await writer.send_event(room, BOB, "m.room.message", {"body": "secret"})
    keep = await writer.send_event(room, BOB, "m.room.message", {"body": "stays"})
    await writer.send_event(room, BOB, "m.room.redaction", {}, redacts=msg.event_id)
    reader = EventReader(writer.store)
    censor = RedactionCensor(reader, retention_ms=7 * 86_400_000)
    assert await censor.censor_due() == 0  # too recent
    import time

    later = int(time.time() * 1000) + 8 * 86_400_000
    assert await censor.censor_due(now_ms=later) == 1
    assert await censor.censor_due(now_ms=later) == 0  # done once
    conn = sqlite3.connect(db.path)
    rows = dict(
        conn.execute(
            "SELECT event_id, json FROM events WHERE event_id IN (?, ?)",
            (msg.event_id, keep.event_id),
        ).fetchall()
    )
    assert "secret" not in rows[msg.event_id]
    assert "stays" in rows[keep.event_id]
    seen = await reader.get_events([msg.event_id])
    assert seen[msg.event_id].pdu["content"] == {}
    assert seen[msg.event_id].redacted_because is not None


async def test_retention_none_never_censors(writer: RoomWriter) -> None:
    room = await _room(writer, "10")
    msg = await writer.send_event(room, BOB, "m.room.message", {"body": "kept"})
    await writer.send_event(room, BOB, "m.room.redaction", {}, redacts=msg.event_id)
    censor = RedactionCensor(EventReader(writer.store), retention_ms=None)
    assert await censor.censor_due(now_ms=2**50) == 0
