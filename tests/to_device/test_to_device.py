"""Send-to-device storage, the service (validation, bounds, idempotence) and its sync source."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pocketserver.core.event_filter import SyncFilter
from pocketserver.errors import MatrixError
from pocketserver.storage import devices as device_store
from pocketserver.storage import to_device as store
from pocketserver.storage import users as user_store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier
from pocketserver.streams.token import SyncToken
from pocketserver.sync.sources import SyncContext
from pocketserver.to_device.service import MAX_CONTENT_BYTES, ToDeviceService
from pocketserver.to_device.sync_source import ToDeviceSource

SERVER = "local.test"
ALICE = "@alice:local.test"
BOB = "@bob:local.test"
DAY = 24 * 3600 * 1000


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "td.db", memory_bytes=16 << 20, synchronous="normal")
    for user, devices in ((ALICE, ["A1"]), (BOB, ["B1", "B2", "B3"])):
        database.write_sync(user_store.insert_user, user, None, 0)
        for device in devices:
            database.write_sync(device_store.ensure_device, user, device, None, 0)
    yield database
    database.close()


@pytest.fixture
def notifier() -> Notifier:
    return Notifier()


@pytest.fixture
async def service(db: Database, notifier: Notifier) -> ToDeviceService:
    return await ToDeviceService.open(db, notifier, SERVER, max_inbox=5)


def _send(db: Database, txn: str, messages: list[tuple[str, str, str]], now: int = 0):
    return db.write_sync(store.send, ALICE, "A1", "m.test", txn, messages, now, 1000, DAY)


def _ctx(user: str, device: str, since: SyncToken | None = None) -> SyncContext:
    return SyncContext(
        user_id=user,
        device_id=device,
        since=since,
        full_state=False,
        filter=SyncFilter(),
        joined_rooms=[],
        body={"to_device": {"events": []}},
    )


def _events(ctx: SyncContext) -> list[dict[str, object]]:
    events = ctx.global_events("to_device")
    return [e for e in events if isinstance(e, dict)]


# --- storage -------------------------------------------------------------------------------


def test_send_expands_star_skips_unknown_and_explicit_wins(db: Database) -> None:
    result = _send(
        db,
        "t1",
        [
            (BOB, "*", '{"n":"star"}'),
            (BOB, "B2", '{"n":"explicit"}'),
            (BOB, "NOPE", '{"n":"unknown device"}'),
            ("@nobody:local.test", "X", '{"n":"unknown user"}'),
            ("@nobody:local.test", "*", '{"n":"unknown user"}'),
        ],
    )
    assert result is not None
    assert result.position == 1
    assert result.delivered == 3
    assert [m.content for m in db.read_sync(store.inbox, BOB, "B1")] == [{"n": "star"}]
    assert [m.content for m in db.read_sync(store.inbox, BOB, "B2")] == [{"n": "explicit"}]
    assert db.read_sync(store.inbox, BOB, "NOPE") == []
    assert db.read_sync(store.stream_position) == 1


def test_same_txn_is_sent_once_and_ids_are_per_device_and_type(db: Database) -> None:
    assert _send(db, "t1", [(BOB, "B1", "{}")]) is not None
    assert _send(db, "t1", [(BOB, "B1", "{}")]) is None
    assert len(db.read_sync(store.inbox, BOB, "B1")) == 1
    # Another event type is another path: not a retry.
    assert db.write_sync(store.send, ALICE, "A1", "m.other", "t1", [(BOB, "B1", "{}")], 0, 9, DAY)
    # Old transaction IDs are forgotten.
    assert _send(db, "t1", [(BOB, "B1", "{}")], now=DAY + 1) is not None
    assert len(db.read_sync(store.inbox, BOB, "B1")) == 3


def test_a_send_that_reaches_nobody_takes_no_position(db: Database) -> None:
    result = _send(db, "t1", [(BOB, "NOPE", "{}"), ("@x:local.test", "*", "{}")])
    assert result is not None
    assert (result.position, result.delivered) == (0, 0)
    assert _send(db, "t1", [(BOB, "B1", "{}")]) is None  # the transaction ID is used


def test_inbox_bound_drops_oldest(db: Database) -> None:
    for i in range(5):
        db.write_sync(
            store.send, ALICE, "A1", "m.test", f"t{i}", [(BOB, "B1", f'{{"i":{i}}}')], 0, 3, DAY
        )
    inbox = db.read_sync(store.inbox, BOB, "B1")
    assert [m.content["i"] for m in inbox] == [2, 3, 4]


def test_pending_and_delete_delivered(db: Database) -> None:
    for i in range(4):
        _send(db, f"t{i}", [(BOB, "B1", f'{{"i":{i}}}')])
    found = db.read_sync(store.pending, BOB, "B1", None, 4, 2)
    assert not found.acknowledged
    assert [m.stream_id for m in found.messages] == [1, 2]
    found = db.read_sync(store.pending, BOB, "B1", 2, 3, 10)
    assert found.acknowledged
    assert [m.stream_id for m in found.messages] == [3]
    assert db.write_sync(store.delete_delivered, BOB, "B1", 2) == 2
    assert [m.stream_id for m in db.read_sync(store.inbox, BOB, "B1")] == [3, 4]


def test_deleting_a_device_deletes_its_inbox_and_txns(db: Database) -> None:
    _send(db, "t1", [(BOB, "*", "{}")])
    db.write_sync(store.send, BOB, "B1", "m.test", "tx", [(ALICE, "A1", "{}")], 0, 9, DAY)
    db.write_sync(device_store.delete_device, BOB, "B1")
    assert db.read_sync(store.inbox, BOB, "B1") == []
    assert len(db.read_sync(store.inbox, BOB, "B2")) == 1
    assert not db.read_sync(store.seen_txn, BOB, "B1", "m.test", "tx")
    db.write_sync(device_store.delete_all_devices, BOB)
    assert db.read_sync(store.inbox, BOB, "B2") == []


# --- service -------------------------------------------------------------------------------


async def test_service_sends_and_notifies(service: ToDeviceService, notifier: Notifier) -> None:
    assert service.position() == 0
    await service.send(ALICE, "A1", "m.test", "t1", {BOB: {"B1": {"a": 1}}})
    assert service.position() == 1
    assert notifier.stream_position("to_device") == 1
    await service.send(ALICE, "A1", "m.test", "t1", {BOB: {"B1": {"a": 1}}})  # a retry
    assert service.position() == 1


async def test_service_position_survives_restart(db: Database, notifier: Notifier) -> None:
    first = await ToDeviceService.open(db, notifier, SERVER)
    await first.send(ALICE, "A1", "m.test", "t1", {BOB: {"B1": {}}})
    again = await ToDeviceService.open(db, Notifier(), SERVER)
    assert again.position() == 1


@pytest.mark.parametrize(
    ("messages", "status", "errcode"),
    [
        ([], 400, "M_BAD_JSON"),
        ("x", 400, "M_BAD_JSON"),
        ({"not-a-user": {"D": {}}}, 400, "M_INVALID_PARAM"),
        ({BOB: []}, 400, "M_BAD_JSON"),
        ({BOB: {"B1": "text"}}, 400, "M_BAD_JSON"),
        ({BOB: {"B1": {"x": "a" * MAX_CONTENT_BYTES}}}, 413, "M_TOO_LARGE"),
    ],
)
async def test_service_rejects_bad_messages_and_sends_nothing(
    service: ToDeviceService, db: Database, messages: object, status: int, errcode: str
) -> None:
    with pytest.raises(MatrixError) as exc:
        await service.send(ALICE, "A1", "m.test", "t1", messages)
    assert (exc.value.status, exc.value.errcode) == (status, errcode)
    assert service.position() == 0
    assert db.read_sync(store.inbox, BOB, "B1") == []
    # The transaction ID was not used up.
    await service.send(ALICE, "A1", "m.test", "t1", {BOB: {"B1": {}}})
    assert service.position() == 1


@pytest.mark.parametrize(("event_type", "txn"), [("", "t"), ("x" * 256, "t"), ("m.t", "t" * 256)])
async def test_service_rejects_bad_type_or_txn(
    service: ToDeviceService, event_type: str, txn: str
) -> None:
    with pytest.raises(MatrixError) as exc:
        await service.send(ALICE, "A1", event_type, txn, {BOB: {"B1": {}}})
    assert exc.value.errcode == "M_INVALID_PARAM"


async def test_remote_users_go_to_the_seam(
    service: ToDeviceService, caplog: pytest.LogCaptureFixture
) -> None:
    handed: list[tuple[str, str, str, object]] = []
    with caplog.at_level(logging.INFO, "pocketserver.to_device.service"):
        await service.send(ALICE, "A1", "m.test", "t0", {"@carol:remote.test": {"*": {"a": 1}}})
    assert "federation is not available" in caplog.text

    async def remote(*args: object) -> None:
        handed.append(args)  # type: ignore[arg-type]

    service.remote = remote  # type: ignore[assignment]
    await service.send(
        ALICE, "A1", "m.test", "t1", {"@carol:remote.test": {"*": {"a": 1}}, BOB: {"B1": {}}}
    )
    assert handed == [(ALICE, "m.test", "remote.test", {"@carol:remote.test": {"*": {"a": 1}}})]


async def test_full_inbox_logs(
    service: ToDeviceService, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "pocketserver.to_device.service"):
        for i in range(7):
            await service.send(ALICE, "A1", "m.test", f"t{i}", {BOB: {"B1": {"i": i}}})
    assert "dropped 1 oldest" in caplog.text
    assert [m.content["i"] for m in db.read_sync(store.inbox, BOB, "B1")] == [2, 3, 4, 5, 6]


# --- sync source ---------------------------------------------------------------------------


async def test_source_delivers_until_acknowledged(service: ToDeviceService, db: Database) -> None:
    source = ToDeviceSource(service)
    await service.send(ALICE, "A1", "m.test", "t1", {BOB: {"*": {"hello": 1}}})
    upto = source.position()
    ctx = _ctx(BOB, "B1")
    assert await source.add_to_sync(ctx, None, upto)
    assert _events(ctx) == [{"sender": ALICE, "type": "m.test", "content": {"hello": 1}}]
    assert ctx.delivered_upto == {}
    # The client died mid-sync: it retries with its old token and gets the same again.
    again = _ctx(BOB, "B1")
    assert await source.add_to_sync(again, None, upto)
    assert _events(again) == _events(ctx)
    # It syncs with the token of that response: the messages are acknowledged and gone.
    after = _ctx(BOB, "B1", SyncToken(to_device=upto))
    assert not await source.add_to_sync(after, upto, upto)
    assert db.read_sync(store.inbox, BOB, "B1") == []
    # Other devices keep theirs.
    assert len(db.read_sync(store.inbox, BOB, "B2")) == 1


async def test_source_sends_bounded_batches(service: ToDeviceService) -> None:
    service.max_inbox = 1000
    source = ToDeviceSource(service, max_per_sync=3)
    for i in range(7):
        await service.send(ALICE, "A1", "m.test", f"t{i}", {BOB: {"B1": {"i": i}}})
    upto = source.position()
    since: int | None = None
    seen: list[object] = []
    for expected in ([0, 1, 2], [3, 4, 5], [6]):
        ctx = _ctx(BOB, "B1")
        assert await source.add_to_sync(ctx, since, upto)
        got = [e["content"] for e in _events(ctx)]
        assert got == [{"i": i} for i in expected]
        seen.extend(got)
        since = ctx.delivered_upto.get("to_device", upto)
    assert since == upto
    assert len(seen) == 7


async def test_source_clamps_a_token_from_the_future(service: ToDeviceService) -> None:
    source = ToDeviceSource(service)
    await service.send(ALICE, "A1", "m.test", "t1", {BOB: {"B1": {}}})
    ctx = _ctx(BOB, "B1")
    assert not await source.add_to_sync(ctx, 50, source.position())


def test_stored_content_is_compact_json(db: Database) -> None:
    _send(db, "t1", [(BOB, "B1", json.dumps({"é": 1}, ensure_ascii=False))])
    assert db.read_sync(store.inbox, BOB, "B1")[0].content == {"é": 1}
