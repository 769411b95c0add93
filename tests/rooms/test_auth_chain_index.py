"""The auth-chain index (storage/auth_chains.py) against a plain walk of the auth DAG.

Random rooms from the state resolution builder (forks, power changes, kicks, bans)
are stored event by event, in an order where auth events come first (the live path)
or shuffled (auth events arriving after the events citing them, then the lazy
backlog of migration 027), and every answer of the index is compared with a walk
over the PDUs' own ``auth_events``: the auth chain of every event and of random
sets, and the auth difference of the room's forks against the pure core's.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable

import pytest

from pocketserver.core.events import auth_event_ids
from pocketserver.core.room_versions import get_room_version
from pocketserver.core.state_res_base import AuthGraph
from pocketserver.core.state_res_graph import auth_difference as core_auth_difference
from pocketserver.storage import auth_chain_queries, auth_chains
from pocketserver.storage import events as event_store
from pocketserver.storage.migrations import apply_migrations
from tests.core.test_state_res_builder import Room, random_forks


def fresh_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    apply_migrations(conn)
    return conn


def store(conn: sqlite3.Connection, room: Room, order: Iterable[str]) -> None:
    for event_id in order:
        pdu = room.events[event_id]
        room_id = str(pdu.get("room_id") or room.room_id)
        event_store.insert_event(
            conn,
            event_id,
            room_id,
            dict(pdu),
            depth=int(pdu.get("depth", 0)),  # type: ignore[call-overload]
            prev_ids=[],
            auth_ids=auth_event_ids(pdu, room.version),
            received_ms=0,
            outlier=True,
        )


def true_chain(graph: AuthGraph, seeds: Iterable[str]) -> set[str]:
    """The auth chain of ``seeds`` by walking the PDUs (seeds only if reached)."""
    out: set[str] = set()
    stack = [a for s in seeds for a in graph.auth_ids(s)]
    while stack:
        e = stack.pop()
        if e not in out:
            out.add(e)
            stack.extend(graph.auth_ids(e))
    return out


def build(version: str, seed: int) -> tuple[Room, list]:
    rng = random.Random(f"index-{version}-{seed}")
    room = Room(version)
    forks = random_forks(room, rng, n_forks=rng.randrange(2, 5), steps=50)
    return room, forks


CASES = [(v, s) for v in ["3", "10", "12"] for s in range(12)]


@pytest.mark.parametrize(("version", "seed"), CASES)
@pytest.mark.parametrize("shuffled", [False, True])
def test_index_answers_equal_the_walk(version: str, seed: int, shuffled: bool) -> None:
    room, forks = build(version, seed)
    rng = random.Random(seed)
    order = list(room.events)  # the builder's order: auth events first
    if shuffled:
        rng.shuffle(order)
    conn = fresh_db()
    store(conn, room, order)
    if shuffled:
        while auth_chains.index_pending(conn, 7):
            pass
    # Every state event ends up indexed (all its auth events are stored).
    assert auth_chains.pending_count(conn) == 0
    graph = AuthGraph(get_room_version(version), room.events)
    ids = list(room.events)
    for event_id in ids:
        assert event_store.get_auth_chain_ids(conn, [event_id]) == true_chain(graph, [event_id])
    for _ in range(20):
        sample = rng.sample(ids, rng.randrange(1, 6))
        assert event_store.get_auth_chain_ids(conn, sample) == true_chain(graph, sample)
    sets = [set(f.values()) for f in forks]
    ours = auth_chain_queries.auth_difference(conn, sets)
    assert ours == core_auth_difference(graph, sets)


@pytest.mark.parametrize("version", ["10", "12"])
def test_unindexed_events_are_walked(version: str) -> None:
    """Before the backlog is indexed (a database from before migration 027, here an
    event whose auth events arrive later), the answers are the same."""
    room, forks = build(version, 99)
    order = list(room.events)
    late = order[: len(order) // 3]
    conn = fresh_db()
    store(conn, room, order[len(order) // 3 :])
    store(conn, room, late)
    assert auth_chains.pending_count(conn) > 0
    graph = AuthGraph(get_room_version(version), room.events)
    for event_id in order:
        assert event_store.get_auth_chain_ids(conn, [event_id]) == true_chain(graph, [event_id])
    sets = [set(f.values()) for f in forks]
    assert auth_chain_queries.auth_difference(conn, sets) == core_auth_difference(graph, sets)
    while auth_chains.index_pending(conn, 5):
        pass
    assert auth_chains.pending_count(conn) == 0
    assert auth_chain_queries.auth_difference(conn, sets) == core_auth_difference(graph, sets)


def test_unstored_event_counts_with_its_auth_events() -> None:
    """The writer resolves a state that holds its new event before storing it."""
    room, forks = build("10", 3)
    conn = fresh_db()
    ids = list(room.events)
    new = ids[-1]
    store(conn, room, ids[:-1])
    graph = AuthGraph(get_room_version("10"), room.events)
    sets = [set(f.values()) | ({new} if i == 0 else set()) for i, f in enumerate(forks)]
    sets[0].discard(next(iter(sets[0] - {new})))
    ours = auth_chain_queries.auth_difference(
        conn, sets, {new: auth_event_ids(room.events[new], "10")}
    )
    assert ours == core_auth_difference(graph, sets)


async def test_the_indexer_takes_a_pre_027_backlog(db) -> None:  # type: ignore[no-untyped-def]
    """A database whose events predate the index: migration 027 lists every state
    event as pending; the background indexer indexes them in bounded batches."""
    from pocketserver.rooms.auth_index import AuthChainIndexer

    room, forks = build("10", 5)
    ids = list(room.events)

    def setup(conn: sqlite3.Connection) -> None:
        store(conn, room, ids)
        # As the migration leaves an older database: nothing indexed, all pending.
        conn.execute("DELETE FROM event_auth_chains")
        conn.execute("DELETE FROM event_auth_chain_links")
        conn.execute(
            "INSERT INTO event_auth_chain_pending (event_id, room_id)"
            " SELECT event_id, room_id FROM events WHERE state_key IS NOT NULL"
        )

    db.write_sync(setup)
    before = db.read_sync(auth_chains.pending_count)
    assert before == len(ids)
    indexer = AuthChainIndexer(db, batch=4)
    await indexer.index_all()
    assert db.read_sync(auth_chains.pending_count) == 0
    assert indexer.statistics().indexed_batches >= before // 4
    graph = AuthGraph(get_room_version("10"), room.events)
    for event_id in ids:
        assert db.read_sync(event_store.get_auth_chain_ids, [event_id]) == true_chain(
            graph, [event_id]
        )
    sets = [set(f.values()) for f in forks]
    assert db.read_sync(auth_chain_queries.auth_difference, sets) == core_auth_difference(
        graph, sets
    )
