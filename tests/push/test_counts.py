"""Unread counters and recent notifications (storage/push_counts.py), on a real database."""

from __future__ import annotations

from pocketserver.storage import push_counts
from pocketserver.storage.push_counts import RECENT_PER_USER, Notify, ReadUpTo
from tests.push.conftest import Db

BOB = "@bob:test.local"
ROOM = "!room:test.local"
OTHER = "!other:test.local"
THREAD = "$root"


def notify(stream: int, room: str = ROOM, thread: str = "main", highlight: bool = False) -> Notify:
    return Notify(BOB, room, thread, stream, f"$e{stream}", ["notify"], highlight, 1000 + stream)


def counts(db: Db, rooms: list[str] | None = None) -> push_counts.Counts:
    return db.read_sync(push_counts.counts_for_rooms, BOB, rooms or [ROOM, OTHER])


def test_notifications_count_per_room_and_thread(db: Db) -> None:
    db.write_sync(
        push_counts.apply,
        [notify(1), notify(2, highlight=True), notify(3, thread=THREAD), notify(4, room=OTHER)],
    )
    assert counts(db) == {ROOM: {"main": (2, 1), THREAD: (1, 0)}, OTHER: {"main": (1, 0)}}
    assert counts(db, [OTHER]) == {OTHER: {"main": (1, 0)}}


def test_read_marker_past_the_last_notification_resets(db: Db) -> None:
    db.write_sync(push_counts.apply, [notify(1), notify(2, highlight=True)])
    db.write_sync(push_counts.apply, [ReadUpTo(BOB, ROOM, "main", 5)])
    assert counts(db) == {}
    rows = db.read_sync(push_counts.recent_notifications, BOB, None, 10)
    assert [r.read for r in rows] == [True, True]


def test_read_marker_in_the_middle_recounts(db: Db) -> None:
    db.write_sync(push_counts.apply, [notify(1), notify(2, highlight=True), notify(3)])
    db.write_sync(push_counts.apply, [ReadUpTo(BOB, ROOM, "main", 1)])
    assert counts(db) == {ROOM: {"main": (2, 1)}}
    rows = db.read_sync(push_counts.recent_notifications, BOB, None, 10)
    assert [(r.stream_ordering, r.read) for r in rows] == [(3, False), (2, False), (1, True)]


def test_an_older_receipt_changes_nothing(db: Db) -> None:
    db.write_sync(push_counts.apply, [notify(1), notify(2), ReadUpTo(BOB, ROOM, "main", 2)])
    db.write_sync(push_counts.apply, [notify(3), ReadUpTo(BOB, ROOM, "main", 1)])
    assert counts(db) == {ROOM: {"main": (1, 0)}}


def test_a_notification_already_read_is_not_counted(db: Db) -> None:
    db.write_sync(push_counts.apply, [ReadUpTo(BOB, ROOM, "main", 10), notify(7)])
    assert counts(db) == {}


def test_threaded_receipt_resets_only_its_thread(db: Db) -> None:
    db.write_sync(push_counts.apply, [notify(1), notify(2, thread=THREAD)])
    db.write_sync(push_counts.apply, [ReadUpTo(BOB, ROOM, THREAD, 2)])
    assert counts(db) == {ROOM: {"main": (1, 0)}}
    db.write_sync(push_counts.apply, [ReadUpTo(BOB, ROOM, "main", 2)])
    assert counts(db) == {}


def test_unthreaded_receipt_resets_every_thread_of_the_room(db: Db) -> None:
    db.write_sync(
        push_counts.apply,
        [notify(1), notify(2, thread=THREAD), notify(3, thread="$other"), notify(4, room=OTHER)],
    )
    db.write_sync(push_counts.apply, [ReadUpTo(BOB, ROOM, None, 2)])
    assert counts(db) == {ROOM: {"$other": (1, 0)}, OTHER: {"main": (1, 0)}}


def test_recent_notifications_are_bounded_and_paginate(db: Db) -> None:
    db.write_sync(
        push_counts.apply,
        [notify(i, highlight=i % 10 == 0) for i in range(1, RECENT_PER_USER + 21)],
    )
    newest = db.read_sync(push_counts.recent_notifications, BOB, None, 1000)
    assert len(newest) == RECENT_PER_USER
    assert newest[0].stream_ordering == RECENT_PER_USER + 20
    assert newest[-1].stream_ordering == 21
    page = db.read_sync(push_counts.recent_notifications, BOB, 50, 5)
    assert [r.stream_ordering for r in page] == [49, 48, 47, 46, 45]
    highlights = db.read_sync(push_counts.recent_notifications, BOB, None, 100, True)
    assert all(r.highlight for r in highlights)
    assert [r.stream_ordering for r in highlights][:2] == [120, 110]
    # The counter still counts everything; a receipt in the middle recounts what is listed.
    assert counts(db) == {ROOM: {"main": (RECENT_PER_USER + 20, 12)}}
    db.write_sync(push_counts.apply, [ReadUpTo(BOB, ROOM, "main", 100)])
    assert counts(db) == {ROOM: {"main": (20, 2)}}


def test_other_users_are_separate(db: Db) -> None:
    db.write_sync(
        push_counts.apply,
        [notify(1), Notify("@carol:test.local", ROOM, "main", 2, "$e2", ["notify"], True, 5)],
    )
    db.write_sync(push_counts.apply, [ReadUpTo(BOB, ROOM, None, 9)])
    assert counts(db) == {}
    carol = db.read_sync(push_counts.counts_for_rooms, "@carol:test.local", [ROOM])
    assert carol == {ROOM: {"main": (1, 1)}}
