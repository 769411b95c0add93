"""The store's cached forward extremities always equal the database's, through forks,
gaps, outliers, rejections and failed writes (the writer scenarios run again with a check
after every event)."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable

import pytest

from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import PersistedEvent, RoomWriter
from pocketserver.storage import events as event_store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

from . import test_writer_remote as remote_tests
from .conftest import ALICE, RemoteServer
from .test_writer_local import MSG, make_room

Scenario = Callable[..., Awaitable[None]]


def _check_after_every_event(writer: RoomWriter, store: RoomStore, db: Database) -> list[str]:
    checked: list[str] = []

    def check(event: PersistedEvent) -> None:
        cached = store._extremities.get(event.room_id)
        if cached is not None:
            in_db = db.read_sync(event_store.get_forward_extremities, event.room_id)
            assert [(e, d) for e, d, _ in cached] == in_db, event.event_id
            checked.append(event.event_id)

    writer.add_listener(check)
    return checked


@pytest.mark.parametrize(
    ("scenario", "version"),
    [
        (remote_tests.test_fork_gives_two_extremities_and_resolved_state, "10"),
        (remote_tests.test_fork_with_a_power_level_change, "11"),
        (remote_tests.test_fork_with_a_power_level_change, "12"),
        (remote_tests.test_outliers_then_de_outliered, "10"),
        (remote_tests.test_outliers_then_de_outliered, "3"),
    ],
)
async def test_cache_follows_the_database(
    writer: RoomWriter,
    remote: RemoteServer,
    db: Database,
    store: RoomStore,
    scenario: Scenario,
    version: str,
) -> None:
    checked = _check_after_every_event(writer, store, db)
    kwargs = {"writer": writer, "remote": remote, "db": db, "version": version}
    if "notifier" in scenario.__code__.co_varnames:
        kwargs["notifier"] = writer._notifier
    await scenario(**kwargs)
    assert len(checked) >= 3


@pytest.mark.parametrize(
    "scenario",
    [
        remote_tests.test_soft_fail_when_banned_on_another_branch,
        remote_tests.test_missing_prev_events_then_given_state_then_the_gap,
        remote_tests.test_rejected_against_state_before,
    ],
)
async def test_cache_follows_the_database_without_versions(
    writer: RoomWriter,
    remote: RemoteServer,
    db: Database,
    store: RoomStore,
    notifier: Notifier,
    scenario: Scenario,
) -> None:
    checked = _check_after_every_event(writer, store, db)
    kwargs = {"writer": writer, "remote": remote, "db": db}
    if "notifier" in scenario.__code__.co_varnames:
        kwargs["notifier"] = writer._notifier
    await scenario(**kwargs)
    assert len(checked) >= 3


async def test_a_failed_write_drops_the_cached_extremities(
    writer: RoomWriter, store: RoomStore, db: Database
) -> None:
    room_id = await make_room(writer)
    before = await store.forward_extremities(room_id)

    def fail(conn: sqlite3.Connection, event: PersistedEvent) -> None:
        raise RuntimeError("the disk is full")

    with pytest.raises(RuntimeError):
        await writer.send_event(room_id, ALICE, "m.room.message", MSG, in_txn=fail)
    assert store._extremities.get(room_id) is None
    assert await store.forward_extremities(room_id) == before
    sent = await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    assert await store.forward_extremities(room_id) == [(sent.event_id, before[0][1] + 1)]
