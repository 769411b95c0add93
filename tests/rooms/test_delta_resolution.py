"""Delta state resolution (rooms/resolver.py) against the full in-memory resolution.

Random forked rooms from the state resolution builder are stored; the resolver loads
only what the index says is needed and must give the answer of the pure resolver
fed every event (itself checked against Synapse's in tests/core), and Synapse's.
"""

from __future__ import annotations

import random

import pytest

from pocketserver.core.events import auth_event_ids
from pocketserver.core.state_res import resolve_state
from pocketserver.rooms.resolver import StateResolver, Unstored
from pocketserver.rooms.store import RoomStore
from pocketserver.storage import events as event_store
from pocketserver.storage.db import Database
from tests.core.test_state_res_builder import Room, random_forks
from tests.core.test_state_res_vs_synapse import synapse_resolve


def store_room(db: Database, room: Room, skip: str | None = None) -> None:
    def txn(conn):  # type: ignore[no-untyped-def]
        for event_id, pdu in room.events.items():
            if event_id == skip:
                continue
            event_store.insert_event(
                conn,
                event_id,
                str(pdu.get("room_id") or room.room_id),
                dict(pdu),
                depth=int(pdu.get("depth", 0)),  # type: ignore[call-overload]
                prev_ids=[],
                auth_ids=auth_event_ids(pdu, room.version),
                received_ms=0,
                outlier=True,
            )

    db.write_sync(txn)


CASES = [(v, s) for v in ["1", "2", "6", "10", "11", "12"] for s in range(15)]


@pytest.mark.parametrize(("version", "seed"), CASES)
async def test_delta_resolution_equals_full(store: RoomStore, version: str, seed: int) -> None:
    rng = random.Random(f"delta-{version}-{seed}")
    room = Room(version)
    forks = random_forks(room, rng, n_forks=rng.randrange(2, 6), steps=60)
    store_room(store.db, room)
    resolver = StateResolver(store)
    ours = await resolver.resolve(version, forks)
    assert ours == resolve_state(version, forks, room.events)
    assert ours == synapse_resolve(room, forks)
    assert resolver.statistics().events_loaded <= len(room.events)


@pytest.mark.parametrize(("version", "seed"), [(v, s) for v in ["10", "12"] for s in range(8)])
async def test_with_an_unstored_event(store: RoomStore, version: str, seed: int) -> None:
    """The writer resolves the state after its new event before storing it."""
    # Draw rooms until the first fork holds a state event the others lack (a few
    # seeds draw forks that do not differ): every case runs, none is skipped.
    rng = random.Random(f"unstored-{version}-{seed}")
    while True:
        room = Room(version)
        forks = random_forks(room, rng, n_forks=rng.randrange(2, 4), steps=40)
        # The newest state event of the first fork stands for the event being written.
        only_first = set(forks[0].values()).difference(*(f.values() for f in forks[1:]))
        if only_first:
            break
    new_id = max(only_first, key=list(room.events).index)
    store_room(store.db, room, skip=new_id)
    pdu = room.events[new_id]
    unstored = Unstored(new_id, pdu, auth_event_ids(pdu, version))
    ours = await StateResolver(store).resolve(version, forks, unstored)
    assert ours == resolve_state(version, forks, room.events)


@pytest.mark.parametrize("version", ["10", "12"])
async def test_a_fork_of_a_big_room_loads_only_its_delta(store: RoomStore, version: str) -> None:
    """300 members, then two forks that each change the topic and one membership:
    the resolution loads the fork events and the few events their checks read."""
    from tests.core.test_state_res_builder import ALICE, BOB

    room = Room(version)
    state = room.base(BOB)
    for i in range(300):
        user = f"@user{i}:example.org"
        _, state = room.send(state, "m.room.member", user, {"membership": "join"}, user)
    forks = []
    for n, user in enumerate(["@user1:example.org", "@user2:example.org"]):
        _, fork = room.send(state, "m.room.topic", ALICE, {"topic": f"t{n}"}, "")
        _, fork = room.send(fork, "m.room.member", user, {"membership": "leave"}, user)
        forks.append(fork)
    store_room(store.db, room)
    resolver = StateResolver(store)
    ours = await resolver.resolve(version, forks)
    assert ours == resolve_state(version, forks, room.events)
    assert resolver.statistics().events_loaded < 20
