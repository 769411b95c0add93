"""The evaluator's queue policy and thread detection, without a database."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from pocketserver.push.evaluator import PushEvaluator, relation_of
from pocketserver.rooms.writer import EventKind, PersistedEvent


@dataclass
class _Stored:
    pdu: dict[str, object]


class _FakeStore:
    def __init__(self, events: dict[str, dict[str, object]]) -> None:
        self.events = events

    async def get_event(self, event_id: str) -> _Stored | None:
        await trio.lowlevel.checkpoint()
        pdu = self.events.get(event_id)
        return None if pdu is None else _Stored(pdu)


def _evaluator(events: dict[str, dict[str, object]] | None = None, size: int = 10):
    return PushEvaluator(_FakeStore(events or {}), None, "test.local", queue_size=size)  # type: ignore[arg-type]


def _rel(rel_type: str | None, target: str) -> dict[str, object]:
    relates: dict[str, object] = {"event_id": target}
    if rel_type is not None:
        relates["rel_type"] = rel_type
    return {"content": {"m.relates_to": relates}}


def _event(n: int, **extra: object) -> PersistedEvent:
    return PersistedEvent(f"$e{n}", "!r:test.local", n, {"sender": "@a:test.local"}, **extra)  # type: ignore[arg-type]


def test_relation_of() -> None:
    assert relation_of({"content": {}}) is None
    assert relation_of({"content": "x"}) is None
    assert relation_of({"content": {"m.relates_to": {"rel_type": "m.thread"}}}) is None
    assert relation_of(_rel("m.thread", "$root")) == ("m.thread", "$root")
    assert relation_of(_rel(None, "$x")) == (None, "$x")


async def test_thread_of_follows_at_most_three_hops() -> None:
    events = {
        "$t1": _rel("m.thread", "$root"),
        "$edit": _rel("m.replace", "$t1"),
        "$r1": _rel("m.annotation", "$edit"),
        "$r2": _rel("m.annotation", "$r1"),
    }
    ev = _evaluator(events)
    assert await ev.thread_of({"content": {"body": "x"}}) == "main"
    assert await ev.thread_of(events["$t1"]) == "$root"
    assert await ev.thread_of(_rel("m.annotation", "$t1")) == "$root"
    assert await ev.thread_of(_rel("m.annotation", "$edit")) == "$root"  # 3 hops
    assert await ev.thread_of(_rel("m.annotation", "$r1")) == "main"  # 4 hops: too far
    assert await ev.thread_of(_rel("m.annotation", "$unknown")) == "main"


async def test_full_queue_drops_and_counts() -> None:
    ev = _evaluator(size=2)
    for n in range(1, 5):
        ev.on_event(_event(n))
    stats = ev.statistics()
    assert stats.queued == 2
    assert stats.dropped == 2


async def test_rejected_outliers_and_other_receipts_are_not_queued() -> None:
    ev = _evaluator()
    ev.on_event(_event(1, rejected="auth"))
    ev.on_event(_event(2, soft_failed=True))
    ev.on_event(_event(3, kind=EventKind.OUTLIER))
    ev.on_event(_event(4, kind=EventKind.BACKFILL))
    ev.on_receipt("@b:test.local", "!r:test.local", "m.fully_read", "$e1", None)
    ev.on_receipt("@b:elsewhere", "!r:test.local", "m.read", "$e1", None)
    assert ev.statistics().queued == 0
    ev.on_receipt("@b:test.local", "!r:test.local", "m.read.private", "$e1", None)
    assert ev.statistics().queued == 1


async def test_wait_caught_up_gives_up_after_the_timeout(autojump_clock: object) -> None:
    ev = _evaluator()
    ev.on_event(_event(1))  # nobody runs the evaluator
    start = trio.current_time()
    await ev.wait_caught_up(2.0)
    assert trio.current_time() - start == 2.0
