"""Account data storage, validation, the service (tags, ignored users) and the sync source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from pocketserver.account_data import validate
from pocketserver.account_data.service import AccountDataService
from pocketserver.account_data.sync_source import AccountDataSource
from pocketserver.cache import MemoryBudget
from pocketserver.core.event_filter import SyncFilter
from pocketserver.errors import MatrixError
from pocketserver.storage import account_data as store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier
from pocketserver.sync.sources import SyncContext

ALICE = "@alice:local.test"
BOB = "@bob:local.test"
ROOM = "!room:local.test"
OTHER_ROOM = "!other:local.test"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "ad.db", memory_bytes=16 << 20, synchronous="normal")
    yield database
    database.close()


@pytest.fixture
def notifier() -> Notifier:
    return Notifier()


@pytest.fixture
async def service(db: Database, notifier: Notifier) -> AccountDataService:
    return await AccountDataService.open(db, notifier, MemoryBudget(64 << 20))


def _errcode(exc: pytest.ExceptionInfo[MatrixError]) -> tuple[int, str]:
    return exc.value.status, exc.value.errcode


# --- storage -----------------------------------------------------------------------------


def test_put_get_and_stream_positions(db: Database) -> None:
    big = 1 << 30
    assert db.read_sync(store.stream_position) == 0
    p1 = db.write_sync(store.put, ALICE, "", "a.b", {"x": 1}, 100, big)
    p2 = db.write_sync(store.put, ALICE, ROOM, "a.b", {"y": "é"}, 100, big)
    p3 = db.write_sync(store.put, ALICE, "", "a.b", {"x": 2}, 100, big)
    assert (p1, p2, p3) == (1, 2, 3)
    assert db.read_sync(store.stream_position) == 3
    assert db.read_sync(store.get, ALICE, "", "a.b") == {"x": 2}
    assert db.read_sync(store.get, ALICE, ROOM, "a.b") == {"y": "é"}
    assert db.read_sync(store.get, BOB, "", "a.b") is None
    rows = db.read_sync(store.changed_between, ALICE, 1, 3)
    assert [(r.room_id, r.type, r.content, r.stream_id) for r in rows] == [
        (ROOM, "a.b", {"y": "é"}, 2),
        ("", "a.b", {"x": 2}, 3),
    ]
    # Everything up to a position, for an initial sync; nothing past it.
    assert [r.stream_id for r in db.read_sync(store.changed_between, ALICE, None, 2)] == [2]
    assert db.read_sync(store.changed_between, BOB, None, 3) == []


def test_whole_rooms_are_sent_in_full(db: Database) -> None:
    big = 1 << 30
    db.write_sync(store.put, ALICE, ROOM, "m.tag", {"tags": {}}, 100, big)
    db.write_sync(store.put, ALICE, OTHER_ROOM, "x", {}, 100, big)
    db.write_sync(store.put, ALICE, "", "g", {}, 100, big)
    rows = db.read_sync(store.changed_between, ALICE, 2, 3, [ROOM])
    assert [(r.room_id, r.type) for r in rows] == [(ROOM, "m.tag"), ("", "g")]


def test_item_and_byte_limits_change_nothing(db: Database) -> None:
    db.write_sync(store.put, ALICE, "", "a", {"v": "x" * 50}, 2, 200)
    db.write_sync(store.put, ALICE, "", "b", {}, 2, 200)
    with pytest.raises(store.AccountDataLimitError):
        db.write_sync(store.put, ALICE, "", "c", {}, 2, 200)
    # Replacing an item is not a new item; growing past the byte limit is refused.
    db.write_sync(store.put, ALICE, "", "b", {"v": 1}, 2, 200)
    with pytest.raises(store.AccountDataLimitError):
        db.write_sync(store.put, ALICE, "", "b", {"v": "y" * 200}, 2, 200)
    assert db.read_sync(store.get, ALICE, "", "b") == {"v": 1}
    assert db.read_sync(store.stream_position) == 3
    # Other users have their own limits.
    db.write_sync(store.put, BOB, "", "c", {}, 2, 200)


def test_update_without_change_keeps_the_position(db: Database) -> None:
    assert db.write_sync(store.update, ALICE, ROOM, "m.tag", lambda old: None, 10, 1000) is None
    assert db.read_sync(store.stream_position) == 0
    pos = db.write_sync(store.update, ALICE, ROOM, "m.tag", lambda old: {"n": old}, 10, 1000)
    assert pos == 1
    assert db.read_sync(store.get, ALICE, ROOM, "m.tag") == {"n": None}


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize("type_", ["m.fully_read", "m.push_rules"])
def test_server_managed_types_are_405(type_: str) -> None:
    with pytest.raises(MatrixError) as exc:
        validate.check_client_may_set(type_)
    assert _errcode(exc) == (405, "M_BAD_JSON")


@pytest.mark.parametrize("type_", ["", "x" * 256, "\udc80"])
def test_bad_types(type_: str) -> None:
    with pytest.raises(MatrixError) as exc:
        validate.check_type(type_)
    assert _errcode(exc) == (400, "M_INVALID_PARAM")


def test_size_limit() -> None:
    validate.check_size({"v": "x" * (validate.MAX_CONTENT_BYTES - 20)})
    with pytest.raises(MatrixError) as exc:
        validate.check_size({"v": "é" * validate.MAX_CONTENT_BYTES})
    assert _errcode(exc) == (413, "M_TOO_LARGE")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({}, (400, "M_BAD_JSON")),
        ({"ignored_users": []}, (400, "M_BAD_JSON")),
        ({"ignored_users": {"bob": {}}}, (400, "M_INVALID_PARAM")),
        ({"ignored_users": {BOB: True}}, (400, "M_BAD_JSON")),
        ({"ignored_users": {ALICE: {}}}, (400, "M_INVALID_PARAM")),
    ],
)
def test_bad_ignored_user_lists(content: dict[str, object], expected: tuple[int, str]) -> None:
    with pytest.raises(MatrixError) as exc:
        validate.check_ignored_user_list(ALICE, content)
    assert _errcode(exc) == expected


def test_ignored_set() -> None:
    validate.check_ignored_user_list(ALICE, {"ignored_users": {BOB: {}}, "extra": 1})
    assert validate.ignored_set({"ignored_users": {BOB: {}}}) == frozenset({BOB})
    assert validate.ignored_set({"ignored_users": [BOB]}) == frozenset()
    assert validate.ignored_set(None) == frozenset()


@pytest.mark.parametrize(
    ("tag", "body", "expected"),
    [
        ("", {}, (400, "M_INVALID_PARAM")),
        ("é" * 128, {}, (400, "M_INVALID_PARAM")),
        ("u.x", {"order": "0.5"}, (400, "M_BAD_JSON")),
        ("u.x", {"order": True}, (400, "M_BAD_JSON")),
        ("u.x", {"order": 1.5}, (400, "M_INVALID_PARAM")),
        ("u.x", {"order": -0.1}, (400, "M_INVALID_PARAM")),
    ],
)
def test_bad_tags(tag: str, body: dict[str, object], expected: tuple[int, str]) -> None:
    with pytest.raises(MatrixError) as exc:
        validate.check_tag(tag, body)
    assert _errcode(exc) == expected


def test_good_tags() -> None:
    assert validate.check_tag("x" * 255, {"order": 0}) == {"order": 0}
    assert validate.check_tag("u.x", {"order": 1, "other": "kept"}) == {"order": 1, "other": "kept"}
    assert validate.check_tag("m.favourite", {"order": None}) == {}


# --- service -----------------------------------------------------------------------------


async def test_set_get_and_notify(service: AccountDataService, notifier: Notifier) -> None:
    with pytest.raises(MatrixError) as exc:
        await service.get(ALICE, None, "a.b")
    assert _errcode(exc) == (404, "M_NOT_FOUND")
    await service.set_by_client(ALICE, None, "a.b", {"k": 1})
    await service.set_by_client(ALICE, ROOM, "a.b", {"k": 2})
    assert await service.get(ALICE, None, "a.b") == {"k": 1}
    assert await service.get(ALICE, ROOM, "a.b") == {"k": 2}
    assert service.position() == 2
    assert notifier.stream_position("account_data") == 2
    with pytest.raises(MatrixError) as exc:
        await service.set_by_client(ALICE, ROOM, "m.fully_read", {"event_id": "$x"})
    assert _errcode(exc) == (405, "M_BAD_JSON")
    # The server itself may set managed types (push rules, the read marker).
    await service.set(ALICE, None, "m.push_rules", {"global": {}})
    await service.set_fully_read(ALICE, ROOM, "$e")
    assert await service.fully_read(ALICE, ROOM) == "$e"
    assert await service.fully_read(ALICE, OTHER_ROOM) is None


async def test_position_survives_reopening(db: Database, service: AccountDataService) -> None:
    await service.set_by_client(ALICE, None, "a", {})
    await service.set_by_client(ALICE, None, "a", {"v": 1})
    notifier = Notifier()
    reopened = await AccountDataService.open(db, notifier, MemoryBudget(64 << 20))
    assert reopened.position() == 2
    assert notifier.stream_position("account_data") == 2


async def test_tags(service: AccountDataService) -> None:
    assert await service.tags(ALICE, ROOM) == {}
    await service.set_tag(ALICE, ROOM, "m.favourite", {"order": 0.25})
    await service.set_tag(ALICE, ROOM, "u.work", {})
    assert await service.tags(ALICE, ROOM) == {"m.favourite": {"order": 0.25}, "u.work": {}}
    assert await service.get(ALICE, ROOM, "m.tag") == {
        "tags": {"m.favourite": {"order": 0.25}, "u.work": {}}
    }
    position = service.position()
    await service.remove_tag(ALICE, ROOM, "u.missing")
    assert service.position() == position  # nothing changed, nothing sent
    await service.remove_tag(ALICE, ROOM, "m.favourite")
    assert await service.tags(ALICE, ROOM) == {"u.work": {}}
    assert service.position() == position + 1
    await service.remove_tag(ALICE, OTHER_ROOM, "u.work")
    assert await service.tags(BOB, ROOM) == {}


async def test_tags_size_limit(service: AccountDataService) -> None:
    pad = "x" * 10_000
    for i in range(6):  # about 60 KiB of tags
        await service.set_tag(ALICE, ROOM, f"u.{i}", {"order": 0.5, "pad": pad})
    before = await service.tags(ALICE, ROOM)
    with pytest.raises(MatrixError) as exc:
        await service.set_tag(ALICE, ROOM, "u.last", {"order": 0.5, "pad": pad})
    assert _errcode(exc) == (413, "M_TOO_LARGE")
    assert await service.tags(ALICE, ROOM) == before


async def test_ignored_users_cache_follows_changes(service: AccountDataService) -> None:
    assert await service.ignored_users(ALICE) == frozenset()
    await service.set_by_client(ALICE, None, "m.ignored_user_list", {"ignored_users": {BOB: {}}})
    assert await service.ignored_users(ALICE) == frozenset({BOB})
    assert await service.ignored_users(ALICE) == frozenset({BOB})  # from the cache
    await service.set_by_client(ALICE, None, "m.ignored_user_list", {"ignored_users": {}})
    assert await service.ignored_users(ALICE) == frozenset()
    with pytest.raises(MatrixError) as exc:
        await service.set_by_client(ALICE, None, "m.ignored_user_list", {"ignored_users": 1})
    assert _errcode(exc) == (400, "M_BAD_JSON")
    # In a room it is just room account data, not the ignore list.
    await service.set_by_client(ALICE, ROOM, "m.ignored_user_list", {"anything": 1})
    assert await service.ignored_users(ALICE) == frozenset()


async def test_ignored_users_read_racing_a_write_is_not_cached(
    service: AccountDataService,
) -> None:
    await service.set_by_client(ALICE, None, "m.ignored_user_list", {"ignored_users": {BOB: {}}})
    results: list[frozenset[str]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _collect(service, results))
        await service.set_by_client(ALICE, None, "m.ignored_user_list", {"ignored_users": {}})
    assert await service.ignored_users(ALICE) == frozenset()


async def _collect(service: AccountDataService, out: list[frozenset[str]]) -> None:
    out.append(await service.ignored_users(ALICE))


# --- the sync source ---------------------------------------------------------------------


def _ctx(
    joined: list[str], new_rooms: set[str] | None = None, flt: SyncFilter | None = None
) -> SyncContext:
    return SyncContext(
        user_id=ALICE,
        device_id="DEV",
        since=None,
        full_state=False,
        filter=flt or SyncFilter(),
        joined_rooms=joined,
        new_rooms=new_rooms or set(),
        body={"rooms": {"join": {}}, "account_data": {"events": []}},
    )


def _room_types(ctx: SyncContext, room_id: str) -> list[str]:
    rooms = ctx.body["rooms"]
    assert isinstance(rooms, dict)
    entry = rooms["join"].get(room_id)
    return [e["type"] for e in entry["account_data"]["events"]] if entry else []


def _global_types(ctx: SyncContext) -> list[str]:
    part = ctx.body["account_data"]
    assert isinstance(part, dict)
    return [e["type"] for e in part["events"]]


async def test_sync_source_initial_and_incremental(service: AccountDataService) -> None:
    source = AccountDataSource(service)
    assert source.stream == "account_data"
    await service.set_by_client(ALICE, None, "g.one", {"n": 1})
    await service.set_tag(ALICE, ROOM, "u.x", {})
    await service.set_by_client(ALICE, OTHER_ROOM, "r.left", {})
    await service.set_by_client(BOB, None, "g.bob", {})
    first = service.position()
    ctx = _ctx([ROOM], {ROOM})
    assert await source.add_to_sync(ctx, None, first)
    assert _global_types(ctx) == ["g.one"]
    assert _room_types(ctx, ROOM) == ["m.tag"]
    assert _room_types(ctx, OTHER_ROOM) == []  # not joined
    # Nothing new: nothing added, and no database read needed.
    ctx = _ctx([ROOM])
    assert not await source.add_to_sync(ctx, first, first)
    await service.set_by_client(ALICE, None, "g.one", {"n": 2})
    ctx = _ctx([ROOM])
    assert await source.add_to_sync(ctx, first, service.position())
    part = ctx.body["account_data"]
    assert isinstance(part, dict)
    assert part["events"] == [{"type": "g.one", "content": {"n": 2}}]
    assert _room_types(ctx, ROOM) == []
    # A room joined since: all its account data, even what is older than ``since``.
    ctx = _ctx([ROOM, OTHER_ROOM], {OTHER_ROOM})
    assert await source.add_to_sync(ctx, service.position(), service.position())
    assert _room_types(ctx, OTHER_ROOM) == ["r.left"]
    assert _global_types(ctx) == []
    # A token from the future (a restored database) is treated as now.
    ctx = _ctx([ROOM])
    assert not await source.add_to_sync(ctx, service.position() + 10, service.position())


async def test_sync_source_honours_filters(service: AccountDataService) -> None:
    source = AccountDataSource(service)
    await service.set_by_client(ALICE, None, "m.direct", {})
    await service.set_by_client(ALICE, None, "org.example.x", {})
    await service.set_by_client(ALICE, ROOM, "m.tag", {"tags": {}})
    await service.set_by_client(ALICE, ROOM, "org.example.y", {})
    flt = SyncFilter.parse(
        {
            "account_data": {"not_types": ["org.*"], "senders": ["@nobody:x"]},
            "room": {"account_data": {"types": ["m.tag"]}},
        }
    )
    ctx = _ctx([ROOM], {ROOM}, flt)
    assert await source.add_to_sync(ctx, None, service.position())
    assert _global_types(ctx) == ["m.direct"]
    assert _room_types(ctx, ROOM) == ["m.tag"]
    flt = SyncFilter.parse({"account_data": {"types": []}, "room": {"account_data": {"types": []}}})
    ctx = _ctx([ROOM], {ROOM}, flt)
    assert not await source.add_to_sync(ctx, None, service.position())
