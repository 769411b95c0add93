"""Delivery to push gateways (push/delivery.py): queues, backoff, rejection, drops.

A real SQLite database with the accounts, push and pushers tables; the gateway is an
``httpx.MockTransport``; time is trio's ``autojump_clock``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio

from pocketserver.core.pushers import PusherKey, parse_set_body
from pocketserver.push import delivery as delivery_module
from pocketserver.push.delivery import PushDelivery
from pocketserver.storage import pushers as store
from pocketserver.storage.migrations import available_migrations, split_statements
from pocketserver.storage.push_counts import Notify

BOB = "@bob:hs"
URL = "https://gw.example/_matrix/push/v1/notify"
ROOM = "!room:hs"


class FakeDb:
    """``read``/``write`` like :class:`Database`, on one connection in this thread."""

    delivery: PushDelivery | None = None

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA foreign_keys = ON")
        for migration in available_migrations():
            if migration.name in ("accounts", "rooms", "push", "pushers"):
                for statement in split_statements(migration.sql):
                    self.conn.execute(statement)
        self.conn.execute("INSERT INTO users (name, creation_ts) VALUES (?, 0)", (BOB,))
        self.conn.execute(
            "INSERT INTO devices (user_id, device_id, created_ts) VALUES (?, 'DEV', 0)", (BOB,)
        )

    async def read(self, fn: Callable[..., Any], *args: object) -> Any:
        await trio.lowlevel.checkpoint()
        return fn(self.conn, *args)

    async def write(self, fn: Callable[..., Any], *args: object) -> Any:
        await trio.lowlevel.checkpoint()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.conn, *args)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    def add_pusher(self, pushkey: str, **data: object) -> PusherKey:
        settings = parse_set_body(
            {
                "kind": "http",
                "app_id": "app",
                "pushkey": pushkey,
                "app_display_name": "A",
                "device_display_name": "D",
                "lang": "en",
                "data": {"url": URL, **data},
            }
        )
        assert not isinstance(settings, type(None))
        store.set_pusher(self.conn, BOB, "DEV", settings, 5000)  # type: ignore[arg-type]
        if self.delivery is not None:
            self.delivery.add_user(BOB)
        return PusherKey(BOB, "app", pushkey)


@dataclass
class Event:
    pdu: dict[str, object]


class FakeReader:
    async def get_events(self, event_ids: list[str]) -> dict[str, Event]:
        await trio.lowlevel.checkpoint()
        return {
            e: Event({"type": "m.room.message", "sender": "@al:hs", "content": {"body": e}})
            for e in event_ids
            if not e.startswith("$gone")
        }


Answer = int | tuple[int, dict[str, object]] | Exception


@dataclass
class Gateway:
    """Answers from ``script`` in order, then 200; records (time, pushkey, event_id)."""

    script: list[Answer] = field(default_factory=list)
    per_key: dict[str, list[Answer]] = field(default_factory=dict)
    calls: list[tuple[float, str, str]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    hold: trio.Event | None = None
    stall_s: list[float] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        note = body["notification"]
        self.bodies.append(body)
        self.calls.append((trio.current_time(), note["devices"][0]["pushkey"], note["event_id"]))
        if self.hold is not None:
            await self.hold.wait()
        if self.stall_s:
            await trio.sleep(self.stall_s.pop(0))
        pushkey = note["devices"][0]["pushkey"]
        script = self.per_key.get(pushkey) or self.script
        answer: Answer = script.pop(0) if script else 200
        if isinstance(answer, Exception):
            raise answer
        status, payload = answer if isinstance(answer, tuple) else (answer, {"rejected": []})
        return httpx.Response(status, json=payload)


@pytest.fixture
def db(tmp_path: Path) -> FakeDb:
    return FakeDb(tmp_path / "db.sqlite")


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()


@pytest.fixture
async def delivery(db: FakeDb, gateway: Gateway) -> AsyncIterator[PushDelivery]:
    d = PushDelivery(
        cast(Any, db),
        cast(Any, FakeReader()),
        transport=httpx.MockTransport(gateway.handle),
        max_attempts=5,
        queue_per_pusher=3,
    )
    db.delivery = d
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        yield d
        nursery.cancel_scope.cancel()


def note(event_id: str, user_id: str = BOB, actions: list[object] | None = None) -> Notify:
    return Notify(user_id, ROOM, "main", 1, event_id, actions or ["notify"], False, 0)


async def settle() -> None:
    """Let everything runnable run, and any backoff expire (autojump makes it instant)."""
    await trio.sleep(3600)


async def test_one_request_per_pusher_with_counts(
    autojump_clock: trio.abc.Clock, db: FakeDb, gateway: Gateway, delivery: PushDelivery
) -> None:
    db.add_pusher("k1")
    db.add_pusher("k2", format="event_id_only")
    db.conn.execute(
        "INSERT INTO push_counts (user_id, room_id, thread_id, notification_count)"
        " VALUES (?, ?, 'main', 2), (?, '!other:hs', 'main', 3)",
        (BOB, ROOM, BOB),
    )
    delivery.on_notifications(
        [note("$a", actions=["notify", {"set_tweak": "sound", "value": "x"}])]
    )
    delivery.on_notifications([note("$b", user_id="@nobody:hs")])  # no pushers: nothing
    delivery.on_notifications([])
    await settle()
    assert sorted((k, e) for _, k, e in gateway.calls) == [("k1", "$a"), ("k2", "$a")]
    full, short = sorted(gateway.bodies, key=lambda b: b["notification"]["devices"][0]["pushkey"])
    assert full["notification"]["counts"] == {"unread": 5}
    assert full["notification"]["content"] == {"body": "$a"}
    assert full["notification"]["devices"][0]["tweaks"] == {"sound": "x"}
    assert full["notification"]["devices"][0]["pushkey_ts"] == 5
    assert set(short["notification"]) == {"event_id", "room_id", "prio", "counts", "devices"}
    assert delivery.statistics().sent == 2
    assert delivery.statistics().active_pushers == 0  # idle pushers keep no task


async def test_backoff_doubles_then_succeeds(
    autojump_clock: trio.abc.Clock, db: FakeDb, gateway: Gateway, delivery: PushDelivery
) -> None:
    db.add_pusher("k")
    gateway.script = [500, 503, httpx.ConnectError("refused"), 429]
    start = trio.current_time()
    delivery.on_notifications([note("$a")])
    await settle()
    assert [round(t - start) for t, _, _ in gateway.calls] == [0, 1, 3, 7, 15]
    stats = delivery.statistics()
    assert (stats.sent, stats.retries, stats.dropped) == (1, 4, 0)


async def test_gives_up_after_max_attempts_then_goes_on(
    autojump_clock: trio.abc.Clock, db: FakeDb, gateway: Gateway, delivery: PushDelivery
) -> None:
    db.add_pusher("k")
    gateway.script = [httpx.ReadTimeout("slow")] * 5
    delivery.on_notifications([note("$a"), note("$b")])
    await settle()
    assert [e for _, _, e in gateway.calls] == ["$a"] * 5 + ["$b"]
    stats = delivery.statistics()
    assert (stats.sent, stats.dropped) == (1, 1)


async def test_client_errors_are_not_retried(
    autojump_clock: trio.abc.Clock, db: FakeDb, gateway: Gateway, delivery: PushDelivery
) -> None:
    db.add_pusher("k")
    gateway.script = [404, (200, {"not": "a list"})]
    delivery.on_notifications([note("$a"), note("$b"), note("$gone")])
    await settle()
    assert [e for _, _, e in gateway.calls] == ["$a", "$b"]  # an event gone is skipped
    assert delivery.statistics().dropped == 1
    assert db.conn.execute("SELECT count(*) FROM pushers").fetchone()[0] == 1


async def test_rejected_pushkey_deletes_the_pusher(
    autojump_clock: trio.abc.Clock, db: FakeDb, gateway: Gateway, delivery: PushDelivery
) -> None:
    db.add_pusher("k")
    db.add_pusher("other")
    gateway.per_key["k"] = [(200, {"rejected": ["k", "unrelated"]})]
    gateway.per_key["other"] = [(200, {"rejected": ["k"]})]  # not its own: ignored
    delivery.on_notifications([note("$a"), note("$b")])
    await settle()
    keys = [r[0] for r in db.conn.execute("SELECT pushkey FROM pushers")]
    assert keys == ["other"]
    assert [e for _, k, e in gateway.calls if k == "k"] == ["$a"]  # $b never sent to k
    assert [e for _, k, e in gateway.calls if k == "other"] == ["$a", "$b"]
    assert delivery.statistics().rejected == 1


async def test_full_queue_drops_the_oldest(
    autojump_clock: trio.abc.Clock, db: FakeDb, gateway: Gateway, delivery: PushDelivery
) -> None:
    db.add_pusher("k")
    gateway.hold = trio.Event()
    delivery.on_notifications([note("$1")])
    await trio.sleep(0.1)  # $1 is in flight; the queue holds 3
    delivery.on_notifications([note(f"${i}") for i in range(2, 7)])
    await trio.sleep(0.1)
    assert delivery.statistics().queued == 3
    gateway.hold.set()
    gateway.hold = None
    await settle()
    assert [e for _, _, e in gateway.calls] == ["$1", "$4", "$5", "$6"]
    assert delivery.statistics().dropped == 2
    assert delivery.statistics().queued == 0


async def test_a_pusher_deleted_during_backoff_stops(
    autojump_clock: trio.abc.Clock, db: FakeDb, gateway: Gateway, delivery: PushDelivery
) -> None:
    key = db.add_pusher("k")
    gateway.script = [500] * 5
    delivery.on_notifications([note("$a"), note("$b")])
    await trio.sleep(0.5)
    assert len(gateway.calls) == 1
    await db.write(store.delete_pusher, key)
    delivery.forget(key)
    await settle()
    assert len(gateway.calls) == 1
    assert delivery.statistics().queued == 0


async def test_device_deletion_cascades_to_its_pushers(db: FakeDb) -> None:
    db.add_pusher("k")
    db.conn.execute("DELETE FROM devices WHERE user_id = ?", (BOB,))
    assert await db.read(store.pushers_for_user, BOB) == []


async def test_the_intake_is_bounded(db: FakeDb, gateway: Gateway) -> None:
    d = PushDelivery(cast(Any, db), cast(Any, FakeReader()))
    for _ in range(delivery_module.INTAKE_BATCHES + 2):
        d.on_notifications([note("$a"), note("$b")])
    assert d.statistics().dropped == 4


async def test_the_total_queue_is_bounded(
    autojump_clock: trio.abc.Clock, db: FakeDb, gateway: Gateway
) -> None:
    d = PushDelivery(
        cast(Any, db),
        cast(Any, FakeReader()),
        transport=httpx.MockTransport(gateway.handle),
        max_queued=2,
    )
    db.delivery = d
    db.add_pusher("k1")
    db.add_pusher("k2")
    gateway.hold = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.on_notifications([note("$1")])
        await trio.sleep(0.1)  # both in flight
        d.on_notifications([note("$2"), note("$3")])
        await trio.sleep(0.1)
        stats = d.statistics()
        assert (stats.queued, stats.dropped) == (2, 2)
        nursery.cancel_scope.cancel()


async def test_pushers_stored_before_the_start_are_known(
    autojump_clock: trio.abc.Clock, db: FakeDb, gateway: Gateway
) -> None:
    db.add_pusher("k")  # db.delivery is None: only the database knows
    d = PushDelivery(
        cast(Any, db), cast(Any, FakeReader()), transport=httpx.MockTransport(gateway.handle)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.on_notifications([note("$a"), note("$b", user_id="@carol:hs")])
        await settle()
        assert [e for _, _, e in gateway.calls] == ["$a"]
        nursery.cancel_scope.cancel()


async def test_a_stalled_gateway_is_retried(
    autojump_clock: trio.abc.Clock, db: FakeDb, gateway: Gateway, delivery: PushDelivery
) -> None:
    db.add_pusher("k")
    gateway.stall_s = [10_000]
    start = trio.current_time()
    delivery.on_notifications([note("$a")])
    await settle()
    times = [round(t - start) for t, _, _ in gateway.calls]
    assert times == [0, 2 * delivery_module.TIMEOUT_S + 1]
    assert delivery.statistics().sent == 1
