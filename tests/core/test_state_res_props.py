"""Properties of resolve_state on random rooms (hypothesis).

- The result does not depend on the order of the state sets.
- Resolving a single state set (or copies of one) returns it unchanged.
- The unconflicted state map survives (v2 "Algorithm" step 5; v1 "R starts as the
  union of the states without the conflicting events").
- Every resolved entry names an event of that very (type, state_key).
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocketserver.core.state_res import resolve_state

from .test_state_res_builder import Room, random_forks

VERSIONS = st.sampled_from(["1", "2", "5", "10", "11", "12"])
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _room(version: str, seed: int, forks: int) -> tuple[Room, list[dict]]:
    room = Room(version)
    return room, random_forks(room, random.Random(seed), n_forks=forks, steps=50)


@SETTINGS
@given(version=VERSIONS, seed=st.integers(0, 2**32), forks=st.integers(2, 5), data=st.data())
def test_result_does_not_depend_on_state_set_order(
    version: str, seed: int, forks: int, data: st.DataObject
) -> None:
    room, state_sets = _room(version, seed, forks)
    expected = resolve_state(version, state_sets, room.events)
    shuffled = data.draw(st.permutations(state_sets))
    assert resolve_state(version, shuffled, room.events) == expected


@SETTINGS
@given(version=VERSIONS, seed=st.integers(0, 2**32), copies=st.integers(1, 3))
def test_single_state_set_is_returned_unchanged(version: str, seed: int, copies: int) -> None:
    room, state_sets = _room(version, seed, 2)
    for state in state_sets:
        assert resolve_state(version, [dict(state) for _ in range(copies)], room.events) == state


@SETTINGS
@given(version=VERSIONS, seed=st.integers(0, 2**32), forks=st.integers(2, 5))
def test_unconflicted_state_survives_and_keys_match(version: str, seed: int, forks: int) -> None:
    room, state_sets = _room(version, seed, forks)
    result = resolve_state(version, state_sets, room.events)
    everywhere = set.intersection(*(set(s.items()) for s in state_sets))
    assert everywhere <= set(result.items())
    for (etype, state_key), event_id in result.items():
        event = room.events[event_id]
        assert (event["type"], event["state_key"]) == (etype, state_key)
    # Resolving the result with itself (or with one of the inputs' copies) is stable.
    assert resolve_state(version, [result, dict(result)], room.events) == result
