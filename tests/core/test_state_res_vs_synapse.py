"""Differential test: our state resolution against Synapse's on random rooms.

CORE_API.md encourages comparing with Synapse (imported, never copied). Synapse's
``resolve_events_with_store`` is async; every event is handed to it in ``event_map``
(as "unpersisted" events), so it computes the auth difference and the v2.1
conflicted subgraph itself in memory and the fake store only answers "nothing
persisted". Nothing in it really waits, so the coroutine is driven by hand.

Synapse's own auth rules are used on its side, ours on ours: a difference can come
from either, which is the point.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

import pytest

from pocketserver.core.state_res import resolve_state

from .test_state_res_builder import Room, random_forks

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    # synapse.event_auth first: it avoids a circular import inside synapse.state.
    pytest.importorskip("synapse.event_auth")
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.events import EventBase, make_event_from_dict
    from synapse.state import v1 as synapse_v1
    from synapse.state import v2 as synapse_v2
    from synapse.storage.databases.main.event_federation import StateDifference

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("Synapse's state resolution suspended")


class FakeClock:
    async def sleep(self, duration: object) -> None:
        return None


class NothingPersistedStore:
    def __init__(self, events: dict[str, EventBase]) -> None:
        self.events = events

    async def get_events(self, event_ids: Any, allow_rejected: bool = False) -> dict[str, Any]:
        return {e: self.events[e] for e in event_ids if e in self.events}

    async def get_auth_chain_difference(
        self, room_id: str, state_sets: Any, conflicted_state: Any, additional: Any
    ) -> StateDifference:
        assert all(not s for s in state_sets)  # everything is in event_map
        subgraph = set() if conflicted_state is not None else None
        return StateDifference(auth_difference=set(), conflicted_subgraph=subgraph)


def synapse_resolve(room: Room, state_sets: list[dict]) -> dict:
    version = KNOWN_ROOM_VERSIONS[room.version]
    events = {}
    for event_id, pdu in room.events.items():
        event = make_event_from_dict(dict(pdu), version)
        assert event.event_id == event_id  # event IDs agree with Synapse's
        events[event_id] = event
    if room.version == "1":

        async def factory(ids: Any) -> dict[str, Any]:
            return {e: events[e] for e in ids if e in events}

        awaitable: Awaitable[Any] = synapse_v1.resolve_events_with_store(
            room.room_id, version, state_sets, dict(events), factory
        )
    else:
        awaitable = synapse_v2.resolve_events_with_store(
            FakeClock(),
            room.room_id,
            version,
            state_sets,
            dict(events),
            NothingPersistedStore(events),
        )
    return dict(run(awaitable))  # type: ignore[arg-type]


CASES = [(v, seed) for v in ["1", "2", "3", "6", "10", "11", "12"] for seed in range(25)]


@pytest.mark.parametrize(("version", "seed"), CASES)
def test_same_result_as_synapse(version: str, seed: int) -> None:
    rng = random.Random(f"{version}-{seed}")
    room = Room(version)
    forks = random_forks(room, rng, n_forks=rng.randrange(2, 6), steps=60)
    ours = resolve_state(version, forks, room.events)
    theirs = synapse_resolve(room, forks)
    assert ours == theirs
