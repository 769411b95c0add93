"""State resolution v2 (rooms v2-v11) and v2.1 (room v12).

Spec: content/rooms/fragments/v2-state-res.md ("Definitions", "Algorithm") and
content/rooms/v12.md "State resolution" (v2.1: the conflicted state subgraph joins
the full conflicted set, and the iterative auth checks of step 2 start from an empty
state map instead of the unconflicted state map).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from pocketserver.core.auth_rules import AuthError, auth_types_for_event, check_auth
from pocketserver.core.room_versions import RoomVersion, StateResAlgorithm
from pocketserver.core.state_res_base import (
    CREATE,
    POWER_LEVELS,
    AuthGraph,
    Event,
    StateKey,
    StateMap,
    separate,
    state_key_of,
)
from pocketserver.core.state_res_graph import (
    auth_difference,
    conflicted_subgraph,
    is_power_event,
    mainline_sort,
    reverse_topological_power_sort,
)

__all__ = ["iterative_auth_checks", "resolve_v2"]


def _auth_events_for_check(
    graph: AuthGraph, event_id: str, state: Mapping[StateKey, str]
) -> dict[StateKey, Event]:
    """Build the ``auth_events`` mapping for one iterative auth check.

    Spec (v2-state-res.md "Iterative auth checks"): keys required by the auth rules
    come from the state being built; a key missing there is taken from the event's own
    ``auth_events``. For v12 the create event is included under ``("m.room.create",
    "")`` (CORE_API.md "check_auth"); the graph already lists it as an auth event.
    """
    event_map = graph.event_map
    event = event_map[event_id]
    auth: dict[StateKey, Event] = {}
    for auth_id in graph.auth_ids(event_id):
        key = state_key_of(event_map[auth_id])
        if key is not None:
            auth[key] = event_map[auth_id]
    wanted = set(auth_types_for_event(graph.room_version.identifier, event))
    wanted.add((CREATE, ""))
    for key in wanted:
        state_id = state.get(key)
        if state_id is not None and state_id in event_map:
            auth[key] = event_map[state_id]
    return auth


def iterative_auth_checks(
    graph: AuthGraph, event_ids: Iterable[str], state: dict[StateKey, str]
) -> dict[StateKey, str]:
    """Apply the iterative auth checks to ``state`` in place.

    Spec (v2-state-res.md "Iterative auth checks"): each event in turn is checked
    against the authorisation rules with the state built so far; if allowed it
    replaces its key in the state, otherwise it is ignored.

    Args:
        graph: The auth graph (holds the events and the room version).
        event_ids: The sorted events to apply.
        state: The starting state; updated in place.

    Returns:
        ``state``.
    """
    version = graph.room_version.identifier
    for event_id in event_ids:
        event = graph.event_map[event_id]
        key = state_key_of(event)
        if key is None:
            continue
        try:
            check_auth(version, event, _auth_events_for_check(graph, event_id, state))
        except AuthError:
            continue
        state[key] = event_id
    return state


def _full_conflicted_set(
    graph: AuthGraph,
    state_sets: Sequence[StateMap],
    conflicted: Mapping[StateKey, set[str]],
    known_difference: Collection[str] | None,
) -> frozenset[str]:
    """Spec (v2-state-res.md / v12.md "Full conflicted set"): the conflicted state set,
    the auth difference (``known_difference`` if the caller computed it) and, in v2.1,
    the conflicted state subgraph."""
    conflicted_ids = {e for ids in conflicted.values() for e in ids}
    if known_difference is None:
        known_difference = auth_difference(graph, [s.values() for s in state_sets])
    full = conflicted_ids.union(known_difference)
    if graph.room_version.state_res is StateResAlgorithm.V2_1:
        full |= conflicted_subgraph(graph, conflicted_ids)
    return frozenset(e for e in full if e in graph.event_map)


def resolve_v2(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
    *,
    auth_difference: Collection[str] | None = None,
) -> dict[StateKey, str]:
    """Resolve state sets with state resolution v2 or v2.1.

    Args:
        room_version: The room version (``state_res`` V2 or V2_1).
        state_sets: The state maps to resolve.
        event_map: Every event of the state sets and of their auth chains (or, with
            ``auth_difference``, what ``state_res.resolve_state`` lists).
        auth_difference: The auth difference, if the caller computed it.

    Returns:
        The resolved state map.
    """
    unconflicted, conflicted = separate(state_sets, missing_key_conflicts=True)
    if not conflicted:
        return unconflicted
    graph = AuthGraph(room_version, event_map)
    full_conflicted = _full_conflicted_set(graph, state_sets, conflicted, auth_difference)

    # Step 1: the power events and their auth chains within the full conflicted set,
    # in reverse topological power ordering.
    power = [e for e in full_conflicted if is_power_event(event_map[e])]
    sorted_power = reverse_topological_power_sort(graph, power, full_conflicted)

    # Step 2: iterative auth checks from the unconflicted state map (v2), or from an
    # empty state map (v2.1, rooms/v12.md "Algorithm" step 2).
    start = dict(unconflicted) if room_version.state_res is StateResAlgorithm.V2 else {}
    state = iterative_auth_checks(graph, sorted_power, start)

    # Step 3: the remaining events by the mainline ordering of the resolved power levels.
    picked = set(sorted_power)
    others = [e for e in full_conflicted if e not in picked]
    others = mainline_sort(graph, others, state.get((POWER_LEVELS, "")))

    # Step 4: iterative auth checks on the partially resolved state.
    state = iterative_auth_checks(graph, others, state)

    # Step 5: the unconflicted state map wins over the resolved state.
    state.update(unconflicted)
    return state
