"""The relations index (writer hook), its queries, bundled aggregations and pagination
tokens, against a real SQLite database."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import pytest

from pocketserver.cache import MemoryBudget
from pocketserver.core.crypto import generate_signing_key
from pocketserver.errors import MatrixError
from pocketserver.rooms.aggregations import bundle
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.history import encode_position, parse_position
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.relations import index_relation
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import relations as relation_store
from pocketserver.storage.db import Database
from pocketserver.storage.migrations import split_statements
from pocketserver.streams.notifier import Notifier
from pocketserver.streams.token import SyncToken

ALICE, BOB = "@alice:example.org", "@bob:example.org"
END = 1 << 62


@pytest.fixture
def db(tmp_path: Path):
    database = Database(tmp_path / "rooms.db", memory_bytes=16 << 20, synchronous="normal")
    yield database
    database.close()


@pytest.fixture
def writer(db: Database) -> RoomWriter:
    store = RoomStore(db, MemoryBudget(64 << 20))
    w = RoomWriter(store, "example.org", generate_signing_key("a_test"), Notifier())
    w.add_txn_hook(index_relation)
    return w


async def _room(writer: RoomWriter) -> str:
    room = await create_room(writer, ALICE, RoomSettings(room_version="11", preset="public_chat"))
    await writer.send_event(room, BOB, "m.room.member", {"membership": "join"}, BOB)
    return room


async def _send(
    writer: RoomWriter, room: str, sender: str, content: dict, etype: str = "m.room.message"
) -> str:
    ev = await writer.send_event(room, sender, etype, content, None)
    return ev.event_id


def _rel(rel_type: str, parent: str, **extra: object) -> dict[str, object]:
    return {"body": "x", "m.relates_to": {"rel_type": rel_type, "event_id": parent}, **extra}


def _rows(db: Database) -> list[tuple[object, ...]]:
    def run(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
        return [tuple(r) for r in conn.execute("SELECT * FROM event_relations ORDER BY event_id")]

    return db.read_sync(run)


def test_parse_position() -> None:
    assert parse_position("t42") == 42
    assert parse_position(encode_position(7)) == 7
    assert parse_position(SyncToken(events=9).encode()) == 10
    assert parse_position("t-3") == -3  # a backfilled event's stream position
    assert parse_position("t7-12") == 12  # a topological token: its stream part
    bad_tokens = ("", "t", "tx", "t--1", "x5", "p", "pa_b", "t" + "9" * 30, "t１")
    for bad in (*bad_tokens, "t1-", "t-1-2", "t1-2-3", "t1--", "t 1", "t1-x"):
        with pytest.raises(MatrixError) as exc:
            parse_position(bad)
        assert (exc.value.status, exc.value.errcode) == (400, "M_INVALID_PARAM")


def test_relation_of_ignores_malformed() -> None:
    assert relation_store.relation_of({"content": _rel("m.thread", "$a")}) is not None
    for content in (
        {},
        {"m.relates_to": "x"},
        {"m.relates_to": {"event_id": "$a"}},  # a reply, no rel_type
        {"m.relates_to": {"rel_type": "m.thread"}},
        {"m.relates_to": {"rel_type": 5, "event_id": "$a"}},
        {"m.relates_to": {"rel_type": "m.thread", "event_id": ""}},
    ):
        assert relation_store.relation_of({"content": content}) is None
    assert relation_store.relation_of({"content": None}) is None


async def test_index_children_recursion_and_redaction(writer: RoomWriter, db: Database) -> None:
    room = await _room(writer)
    root = await _send(writer, room, ALICE, {"body": "root"})
    reply = await _send(writer, room, BOB, _rel("m.thread", root))
    reaction = await _send(
        writer,
        room,
        ALICE,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": reply, "key": "+1"}},
        "m.reaction",
    )
    deeper = await _send(writer, room, BOB, _rel("m.reference", reaction))
    deepest = await _send(writer, room, BOB, _rel("m.reference", deeper))

    def kids(depth: int = 1, **kw: object) -> list[str]:
        args = {"rel_type": None, "event_type": None, **kw}
        rows = db.read_sync(
            relation_store.children,
            room,
            root,
            args["rel_type"],
            args["event_type"],
            0,
            END,
            False,
            50,
            depth,
        )
        return [eid for eid, _ in rows]

    assert kids() == [reply]
    assert kids(3) == [deeper, reaction, reply]  # three levels, newest first
    assert deepest not in kids(3)
    # A filter applies at every level: the reaction is reached only through the reply.
    assert kids(3, rel_type="m.annotation") == []
    assert kids(3, event_type="m.room.message") == [reply]
    # Another room's parent of the same ID finds nothing.
    assert (
        db.read_sync(relation_store.children, "!other:x", root, None, None, 0, END, False, 9, 1)
        == []
    )
    # A redacted child no longer relates.
    await writer.send_event(room, BOB, "m.room.redaction", {"redacts": reply}, None)
    assert kids(3) == []


async def test_backfill_statement_matches_the_hook(writer: RoomWriter, db: Database) -> None:
    room = await _room(writer)
    root = await _send(writer, room, ALICE, {"body": "root"})
    await _send(writer, room, BOB, _rel("m.thread", root))
    await _send(writer, room, ALICE, _rel("m.replace", root, **{"m.new_content": {"body": "y"}}))
    await _send(writer, room, ALICE, {"m.relates_to": {"event_id": root}})  # not indexed
    by_hook = _rows(db)
    assert len(by_hook) == 2
    sql = (resources.files("pocketserver.storage.schema") / "007_relations.sql").read_text()
    backfill = [s for s in split_statements(sql) if "INSERT OR IGNORE" in s]
    assert len(backfill) == 1

    def rerun(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM event_relations")
        conn.execute(backfill[0])

    db.write_sync(rerun)
    assert _rows(db) == by_hook


async def test_bundle_threads_edits_references(writer: RoomWriter, db: Database) -> None:
    room = await _room(writer)
    reader = EventReader(writer.store)
    root = await _send(writer, room, ALICE, {"body": "root"})
    await _send(writer, room, BOB, _rel("m.thread", root))
    last = await _send(writer, room, BOB, _rel("m.thread", root))
    edit1 = await _send(
        writer, room, ALICE, _rel("m.replace", root, **{"m.new_content": {"body": "1"}})
    )
    # Not valid edits: another sender, no m.new_content, another type.
    await _send(writer, room, BOB, _rel("m.replace", root, **{"m.new_content": {"body": "b"}}))
    await _send(writer, room, ALICE, _rel("m.replace", root))
    await _send(writer, room, ALICE, _rel("m.replace", root, **{"m.new_content": {}}), "m.other")
    ref = await _send(writer, room, BOB, _rel("m.reference", root))
    await _send(
        writer,
        room,
        BOB,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "k"}},
        "m.reaction",
    )
    # An edit of the latest thread event: bundled inside latest_event.
    latest_edit = await _send(
        writer, room, BOB, _rel("m.replace", last, **{"m.new_content": {"body": "z"}})
    )
    events = await reader.get_events([root])
    bundles = await bundle(writer.store, reader, BOB, [events[root]])
    rel = bundles[root]
    assert rel.thread is not None
    assert (rel.thread.count, rel.thread.latest.event_id, rel.thread.participated) == (
        2,
        last,
        True,
    )
    assert rel.thread.latest_relations is not None
    assert rel.thread.latest_relations.replace is not None
    assert rel.thread.latest_relations.replace.event_id == latest_edit
    assert rel.replace is not None
    assert rel.replace.event_id == edit1
    assert rel.references == (ref,)
    # Participation: Alice sent the root; Carol did nothing; ignored users don't count.
    carol = "@carol:example.org"
    await writer.send_event(room, carol, "m.room.member", {"membership": "join"}, carol)
    assert (await bundle(writer.store, reader, ALICE, [events[root]]))[root].thread.participated  # type: ignore[union-attr]
    assert not (await bundle(writer.store, reader, carol, [events[root]]))[root].thread.participated  # type: ignore[union-attr]
    ignoring = await bundle(writer.store, reader, carol, [events[root]], ignored=frozenset({BOB}))
    assert ignoring[root].thread is None
    assert ignoring[root].references == ()
    # State events get no bundle.
    state = await writer.send_event(room, ALICE, "m.room.topic", {"topic": "t"}, "")
    await _send(writer, room, BOB, _rel("m.reference", state.event_id))
    got = await reader.get_events([state.event_id])
    assert await bundle(writer.store, reader, BOB, [got[state.event_id]]) == {}
