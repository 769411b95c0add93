"""The search index (writer hook) and queries against a real SQLite database, and the
pure pieces of the directory, hierarchy and upgrade code."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest

from pocketserver.cache import MemoryBudget
from pocketserver.config.model import RateLimit
from pocketserver.core.crypto import generate_signing_key
from pocketserver.core.event_filter import EventFilter
from pocketserver.core.room_versions import get_room_version
from pocketserver.errors import MatrixError
from pocketserver.ratelimit import RateLimiter
from pocketserver.rooms import hierarchy, public_rooms, upgrade
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.search import RoomEventsCriteria, RoomSearch
from pocketserver.rooms.search_index import index_event, searchable_text
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import search as search_store
from pocketserver.storage.db import Database
from pocketserver.storage.public_rooms import Position
from pocketserver.streams.notifier import Notifier

ALICE, BOB = "@alice:example.org", "@bob:example.org"


@pytest.fixture
def db(tmp_path: Path):
    database = Database(tmp_path / "rooms.db", memory_bytes=16 << 20, synchronous="normal")
    yield database
    database.close()


@pytest.fixture
def client(db: Database) -> RoomClient:
    store = RoomStore(db, MemoryBudget(64 << 20))
    writer = RoomWriter(store, "example.org", generate_signing_key("a_test"), Notifier())
    writer.add_txn_hook(index_event)
    return RoomClient(writer, EventReader(store), RateLimiter(RateLimit(1000, 1000)))


def _indexed(db: Database) -> list[tuple[str, str]]:
    def run(conn: sqlite3.Connection) -> list[tuple[str, str]]:
        return [(str(r[0]), str(r[1])) for r in conn.execute("SELECT key, body FROM event_search")]

    return db.read_sync(run)


@pytest.mark.parametrize(
    ("pdu", "expected"),
    [
        ({"type": "m.room.message", "content": {"body": "hi"}}, ("content.body", "hi")),
        ({"type": "m.room.message", "content": {"body": 5}}, None),
        ({"type": "m.room.message", "content": "x"}, None),
        ({"type": "m.room.name", "state_key": "", "content": {"name": "N"}}, ("content.name", "N")),
        ({"type": "m.room.name", "state_key": "x", "content": {"name": "N"}}, None),
        (
            {
                "type": "m.room.topic",
                "state_key": "",
                "content": {
                    "topic": "plain",
                    "m.topic": {
                        "m.text": [
                            {"mimetype": "text/html", "body": "<b>rich</b>"},
                            {"body": "other plain"},
                        ]
                    },
                },
            },
            ("content.topic", "plain\nother plain"),
        ),
        ({"type": "m.room.encrypted", "content": {"body": "no"}}, None),
    ],
)
def test_searchable_text(pdu: dict, expected: tuple[str, str] | None) -> None:
    assert searchable_text(pdu) == expected


def test_query_words_and_fts_escaping() -> None:
    assert search_store.query_words('Martians AND "men" OR men*') == [
        "martians",
        "and",
        "men",
        "or",
    ]
    assert search_store.fts_query(["a", 'b"c']) == '"a"* "b""c"*'
    assert search_store.query_words("!!! ???") == []
    assert len(search_store.query_words(" ".join(f"w{i}" for i in range(40)))) == 16


async def test_hook_indexes_and_redaction_removes(client: RoomClient, db: Database) -> None:
    writer = client.writer
    room = await create_room(
        writer, ALICE, RoomSettings(room_version="11", preset="public_chat", name="Lobby")
    )
    msg = await writer.send_event(room, ALICE, "m.room.message", {"body": "hello world"})
    await writer.send_event(room, ALICE, "m.reaction", {"body": "not indexed"})
    assert sorted(_indexed(db)) == [("content.body", "hello world"), ("content.name", "Lobby")]
    await writer.send_event(
        room, ALICE, "m.room.redaction", {"redacts": msg.event_id}, None, redacts=msg.event_id
    )
    assert _indexed(db) == [("content.name", "Lobby")]


async def test_room_search_orders_and_pages(client: RoomClient) -> None:
    writer = client.writer
    room = await create_room(writer, ALICE, RoomSettings(room_version="11", preset="public_chat"))
    ids = []
    for i in range(7):
        ev = await writer.send_event(room, ALICE, "m.room.message", {"body": f"kiwi {i}"})
        ids.append(ev.event_id)
    search = RoomSearch(client)
    flt = EventFilter(limit=3)
    recent = RoomEventsCriteria(search_term="KIWI", order_by="recent", filter=flt)
    seen: list[str] = []
    token = None
    for _ in range(5):
        page = await search.search(ALICE, recent, token)
        seen += [r["result"]["event_id"] for r in page["results"]]  # type: ignore[index]
        token = page.get("next_batch")
        if token is None:
            break
        assert isinstance(token, str)
    assert seen == ids[::-1]
    ranked = RoomEventsCriteria(search_term="kiwi", filter=flt)
    first = await search.search(ALICE, ranked, None)
    assert first["count"] == 7
    assert str(first["next_batch"]).startswith("r")
    with pytest.raises(MatrixError) as exc:
        await search.search(ALICE, ranked, "s5")  # a token of the other order
    assert exc.value.errcode == "M_INVALID_PARAM"
    # Bob was never in the room.
    nothing = await search.search(BOB, ranked, None)
    assert nothing == {"count": 0, "results": [], "highlights": []}


def test_space_child_order_follows_the_spec_example() -> None:
    children = [
        {"state_key": "!b", "origin_server_ts": 1640341000000, "content": {"order": " "}},
        {"state_key": "!a", "origin_server_ts": 1640141000000, "content": {"order": "aaaa"}},
        {"state_key": "!c", "origin_server_ts": 1640841000000, "content": {"order": "first"}},
        {"state_key": "!e", "origin_server_ts": 1640641000000, "content": {}},
        {"state_key": "!d", "origin_server_ts": 1640741000000, "content": {}},
        {"state_key": "!f", "origin_server_ts": 1, "content": {"order": "\n bad"}},
    ]
    ordered = sorted(children, key=hierarchy._child_sort_key)
    assert [c["state_key"] for c in ordered] == ["!b", "!a", "!c", "!f", "!e", "!d"]


def test_hierarchy_tokens() -> None:
    req = hierarchy.HierarchyRequest("!space:x", suggested_only=True, max_depth=3, limit=7)
    token = hierarchy.encode_token(req, 4)
    resumed = hierarchy.apply_token(req, token)
    assert (resumed.skip, resumed.limit) == (4, 7)
    for other in (
        hierarchy.HierarchyRequest("!other:x", suggested_only=True, max_depth=3),
        hierarchy.HierarchyRequest("!space:x", suggested_only=False, max_depth=3),
        hierarchy.HierarchyRequest("!space:x", suggested_only=True, max_depth=2),
    ):
        with pytest.raises(MatrixError) as exc:
            hierarchy.apply_token(other, token)
        assert exc.value.errcode == "M_INVALID_PARAM"
    for bad in ("", "!!!", "e30", "WzEsMiwzXQ"):
        with pytest.raises(MatrixError):
            hierarchy.apply_token(req, bad)


def test_public_room_tokens() -> None:
    pos = Position(12, "!room:example.org")
    assert public_rooms.decode_token(public_rooms.encode_token("n", pos)) == ("n", pos)
    assert public_rooms.decode_token(public_rooms.encode_token("p", pos)) == ("p", pos)
    raw = [b"n|12|room", b"q|1|!r", b"n|x|!r", b"n|1", b"\xff"]
    encoded = [base64.urlsafe_b64encode(r).decode().rstrip("=") for r in raw]
    for bad in ("", "x", "%%", *encoded):
        with pytest.raises(MatrixError) as exc:
            public_rooms.decode_token(bad)
        assert exc.value.errcode == "M_INVALID_PARAM"


def test_upgrade_power_level_helpers() -> None:
    levels = upgrade._clean_levels(
        {"users": {ALICE: "100", BOB: 50.5}, "events": {"m.x": " 75 "}, "ban": "60", "x": 1}
    )
    assert levels == {"users": {ALICE: 100, BOB: 50}, "events": {"m.x": 75}, "ban": 60, "x": 1}
    assert upgrade._needed_level({"events": {"m.room.tombstone": 150}}) == 150
    assert upgrade._needed_level({"state_default": 20}) == 100
    v6, v10 = get_room_version("6"), get_room_version("10")
    assert upgrade._join_rules({"join_rule": "knock"}, v6) == {"join_rule": "invite"}
    allow = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": "!a"}]}
    assert upgrade._join_rules(dict(allow), v10) == allow
    assert upgrade._join_rules({"join_rule": "public"}, v6) == {"join_rule": "public"}


def test_migration_indexes_events_stored_before_it() -> None:
    from pocketserver.storage.migrations import apply_migrations, available_migrations

    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrations = available_migrations()
    apply_migrations(conn, [m for m in migrations if m.number < 8])
    rows = [
        ("$a", "m.room.message", None, {"content": {"body": "old hello"}}, 0),
        ("$b", "m.room.name", "", {"content": {"name": "Old name"}}, 0),
        ("$c", "m.room.message", None, {"content": {"body": 5}}, 0),
        ("$d", "m.room.message", None, {"content": {"body": "outlier"}}, 1),
        ("$e", "m.room.name", "x", {"content": {"name": "not the room name"}}, 0),
    ]
    for event_id, etype, state_key, pdu, outlier in rows:
        conn.execute(
            "INSERT INTO events (event_id, room_id, type, state_key, sender, depth,"
            " origin_server_ts, received_ts, json, outlier) VALUES (?, '!r', ?, ?, '@a', 1, 1, 1,"
            " ?, ?)",
            (event_id, etype, state_key, json.dumps(pdu), outlier),
        )
    apply_migrations(conn, migrations)
    found = conn.execute("SELECT key, body FROM event_search ORDER BY rowid").fetchall()
    assert found == [("content.body", "old hello"), ("content.name", "Old name")]
