"""What the /sync sources remember to skip the database, and when they must forget it:
the device's key counts (e2e/sync_source.py) and its empty to-device inbox
(to_device/sync_source.py). The real server's behaviour is covered end to end by
tests/e2e/test_sync_changes_delivered.py; these pin the races down."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from pocketserver.core.event_filter import SyncFilter
from pocketserver.e2e.sync_source import DeviceListSource
from pocketserver.storage.to_device import Pending, ToDeviceMessage
from pocketserver.streams.token import SyncToken
from pocketserver.sync.sources import SyncContext
from pocketserver.to_device.sync_source import ToDeviceSource

USER, DEVICE = "@bob:test", "BOB"


def _ctx(since: SyncToken | None = None) -> SyncContext:
    token = since or SyncToken()
    return SyncContext(
        user_id=USER,
        device_id=DEVICE,
        since=since,
        full_state=False,
        filter=SyncFilter(),
        joined_rooms=[],
        body={"next_batch": token.encode()},
    )


class FakeDb:
    """Answers reads from a list; ``during`` runs while a read is in flight."""

    def __init__(self) -> None:
        self.answers: list[object] = []
        self.reads = 0
        self.during: Callable[[], None] | None = None

    async def read(self, fn: Callable[..., Any], *args: object) -> Any:
        self.reads += 1
        if self.during is not None:
            self.during()
            self.during = None
        await trio.lowlevel.checkpoint()
        return self.answers.pop(0)


def _key_source() -> tuple[DeviceListSource, FakeDb]:
    db = FakeDb()
    keys: Any = SimpleNamespace(
        db=db, stream=SimpleNamespace(position=lambda: 0), key_count_listeners=[]
    )
    return DeviceListSource(keys), db


async def test_key_counts_are_read_once_then_remembered() -> None:
    source, db = _key_source()
    db.answers = [(({"signed_curve25519": 5}, ["signed_curve25519"]), None)]
    since = SyncToken()
    for _ in range(3):
        ctx = _ctx(since)
        assert not await source.add_to_sync(ctx, 0, 0)
        assert ctx.body["device_one_time_keys_count"] == {"signed_curve25519": 5}
        assert ctx.body["device_unused_fallback_key_types"] == ["signed_curve25519"]
    assert db.reads == 1


async def test_a_key_change_is_read_at_the_next_sync() -> None:
    source, db = _key_source()
    db.answers = [(({"signed_curve25519": 5}, []), None), (({"signed_curve25519": 4}, []), None)]
    await source.add_to_sync(_ctx(SyncToken()), 0, 0)
    source.key_counts_changed(USER, DEVICE)  # a claim
    ctx = _ctx(SyncToken())
    await source.add_to_sync(ctx, 0, 0)
    assert ctx.body["device_one_time_keys_count"] == {"signed_curve25519": 4}
    assert db.reads == 2


async def test_a_read_overlapping_a_change_is_not_remembered() -> None:
    source, db = _key_source()
    db.answers = [(({"signed_curve25519": 5}, []), None), (({"signed_curve25519": 4}, []), None)]
    # The claim commits while the read (which saw the old count) is in flight.
    db.during = lambda: source.key_counts_changed(USER, DEVICE)
    ctx = _ctx(SyncToken())
    await source.add_to_sync(ctx, 0, 0)
    assert ctx.body["device_one_time_keys_count"] == {"signed_curve25519": 5}
    ctx = _ctx(SyncToken())
    await source.add_to_sync(ctx, 0, 0)
    assert ctx.body["device_one_time_keys_count"] == {"signed_curve25519": 4}
    assert db.reads == 2


async def test_a_change_during_the_remembered_path_reads_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A claim or upload that forgets the counts while a sync is at its checkpoint
    must not break that sync (it raised KeyError: a 500 seen once under matrix-js-sdk's
    Rust crypto) and must be read by it."""
    source, db = _key_source()
    db.answers = [(({"signed_curve25519": 5}, []), None), (({"signed_curve25519": 4}, []), None)]
    await source.add_to_sync(_ctx(SyncToken()), 0, 0)
    original = trio.lowlevel.checkpoint

    async def checkpoint_during_a_claim() -> None:
        source.key_counts_changed(USER, DEVICE)  # another task's claim commits here
        await original()

    monkeypatch.setattr(trio.lowlevel, "checkpoint", checkpoint_during_a_claim)
    ctx = _ctx(SyncToken())
    await source.add_to_sync(ctx, 0, 0)
    assert ctx.body["device_one_time_keys_count"] == {"signed_curve25519": 4}
    assert db.reads == 2


async def test_deleted_devices_forget_every_count() -> None:
    source, db = _key_source()
    db.answers = [(({}, []), None), (({"signed_curve25519": 1}, []), None)]
    await source.add_to_sync(_ctx(SyncToken()), 0, 0)
    source.forget_key_counts()
    ctx = _ctx(SyncToken())
    await source.add_to_sync(ctx, 0, 0)
    assert ctx.body["device_one_time_keys_count"] == {"signed_curve25519": 1}


class FakeInbox:
    def __init__(self) -> None:
        self.position_now = 0
        self.messages: list[ToDeviceMessage] = []
        self.reads = 0

    def position(self) -> int:
        return self.position_now

    async def pending(
        self, user_id: str, device_id: str, since: int | None, upto: int, limit: int
    ) -> Pending:
        self.reads += 1
        await trio.lowlevel.checkpoint()
        after = since or 0
        found = [m for m in self.messages if after < m.stream_id <= upto][:limit]
        self.messages = [m for m in self.messages if m.stream_id > after]  # acknowledged
        return Pending(False, found)


async def test_an_empty_inbox_is_not_read_again_until_the_stream_moves() -> None:
    inbox = FakeInbox()
    source = ToDeviceSource(inbox)  # type: ignore[arg-type]
    assert not await source.add_to_sync(_ctx(), None, 0)
    assert not await source.add_to_sync(_ctx(SyncToken()), 0, 0)
    assert inbox.reads == 1
    inbox.messages.append(ToDeviceMessage(1, "@alice:test", "m.test", {"n": 1}))
    inbox.position_now = 1
    ctx = _ctx(SyncToken())
    assert await source.add_to_sync(ctx, 0, 1)
    assert ctx.body["to_device"] == {
        "events": [{"sender": "@alice:test", "type": "m.test", "content": {"n": 1}}]
    }
    # Delivered but not yet acknowledged: the next sync must read (and delete) it.
    assert not await source.add_to_sync(_ctx(SyncToken(to_device=1)), 1, 1)
    assert inbox.reads == 3
    assert inbox.messages == []
    assert not await source.add_to_sync(_ctx(SyncToken(to_device=1)), 1, 1)
    assert inbox.reads == 3
