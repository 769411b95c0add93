"""Graph algorithms of state resolution v2/v2.1: auth difference, conflicted state
subgraph, reverse topological power ordering and mainline ordering.

Spec: content/rooms/fragments/v2-state-res.md "Definitions" and content/rooms/v12.md
"State resolution" ("Conflicted state subgraph"). All iterative, all linear in the
size of the auth graph (times the number of state sets / 64 for the auth difference).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence

from pocketserver.core.state_res_base import (
    CREATE,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    AuthGraph,
    Event,
    content_of,
    int_field,
    state_key_of,
    str_field,
)

__all__ = [
    "CREATOR_POWER_LEVEL",
    "auth_difference",
    "conflicted_subgraph",
    "is_power_event",
    "mainline_sort",
    "reverse_topological_power_sort",
    "sender_power_level",
]

CREATOR_POWER_LEVEL = 2**53
"""Stands for the "infinitely high" power of v12 room creators (rooms/v12.md
"Authorisation rules"); above any canonical-JSON integer, as in Synapse."""


def auth_difference(graph: AuthGraph, state_sets: Sequence[Collection[str]]) -> set[str]:
    """Return the auth difference of the state sets.

    Spec (v2-state-res.md "Auth difference"): with *C_i* the full auth chain of state
    set *S_i*, the auth difference is ∪ *C_i* − ∩ *C_i*.

    Synapse's ``get_auth_chain_difference`` counts the events of each state set as
    part of that set's full auth chain; the spec's chain holds only their auth events.
    We follow Synapse for interop (CORE_API.md). Note the conflicted state events are
    in the full conflicted set either way.

    Each event gets a bit mask of the sets whose chains reach it; masks are pushed
    from children to auth parents in a topological order (Kahn's algorithm), so the
    work is linear in the graph rather than one walk per set.

    Args:
        graph: The auth graph.
        state_sets: The event IDs of each state set.

    Returns:
        The event IDs in some but not all of the chains.
    """
    masks: dict[str, int] = {}
    for index, ids in enumerate(state_sets):
        bit = 1 << index
        for event_id in ids:
            masks[event_id] = masks.get(event_id, 0) | bit
    reachable = graph.ancestors(masks)
    children_left: dict[str, int] = dict.fromkeys(reachable, 0)
    for event_id in reachable:
        for auth_id in graph.auth_ids(event_id):
            children_left[auth_id] += 1
    ready = [e for e, n in children_left.items() if n == 0]
    while ready:
        event_id = ready.pop()
        mask = masks.get(event_id, 0)
        for auth_id in graph.auth_ids(event_id):
            masks[auth_id] = masks.get(auth_id, 0) | mask
            children_left[auth_id] -= 1
            if children_left[auth_id] == 0:
                ready.append(auth_id)
    everyone = (1 << len(state_sets)) - 1
    return {e for e in reachable if masks.get(e, 0) != everyone}


def conflicted_subgraph(graph: AuthGraph, conflicted: Collection[str]) -> set[str]:
    """Return the conflicted state subgraph (room v12).

    Spec (rooms/v12.md "Definitions", "Conflicted state subgraph"): the union of all
    paths along ``auth_events`` edges between any pair of events of the conflicted
    state set, endpoints included. An event is on such a path iff it is reachable
    from a conflicted event and a conflicted event is reachable from it.

    Args:
        graph: The auth graph.
        conflicted: The conflicted state set (event IDs).

    Returns:
        The subgraph's event IDs (it includes the conflicted events themselves).
    """
    backwards = graph.ancestors(conflicted)
    children: dict[str, list[str]] = {}
    for event_id in backwards:
        for auth_id in graph.auth_ids(event_id):
            children.setdefault(auth_id, []).append(event_id)
    seen = {e for e in conflicted if e in backwards}
    stack = list(seen)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def is_power_event(event: Event) -> bool:
    """Return whether ``event`` is a power event.

    Spec (v2-state-res.md "Power events"): a state event of type
    ``m.room.power_levels`` or ``m.room.join_rules``, or an ``m.room.member`` event with
    membership ``leave`` or ``ban`` whose sender is not its state key.

    Synapse (``synapse/state/v2.py`` ``_is_power_event``) also counts the create event
    and only the empty state key for power levels / join rules; we follow Synapse for
    interop. (A create event only reaches the full conflicted set in malformed input.)

    Args:
        event: The PDU.

    Returns:
        True for a power event.
    """
    key = state_key_of(event)
    if key is None:
        return False
    if key in ((POWER_LEVELS, ""), (JOIN_RULES, ""), (CREATE, "")):
        return True
    if key[0] == MEMBER:
        membership = content_of(event).get("membership")
        return membership in ("leave", "ban") and str_field(event, "sender") != key[1]
    return False


def _to_int(value: object, default: int) -> int:
    """Power levels are integers, or in old rooms strings/floats of integers."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float | str):
        try:
            return int(value)
        except (ValueError, OverflowError):
            return default
    return default


def _is_creator(graph: AuthGraph, create: Event, user_id: str) -> bool:
    """The room creator(s) per the create event (rooms v11 ``sender``; v12 plus
    ``additional_creators``; older ``content.creator``)."""
    content = content_of(create)
    if graph.room_version.hydra:
        extra = content.get("additional_creators")
        extra_ids = extra if isinstance(extra, list) else []
        return user_id == str_field(create, "sender") or user_id in extra_ids
    if graph.room_version.implicit_room_creator:
        return user_id == str_field(create, "sender")
    return user_id == content.get("creator")


def sender_power_level(graph: AuthGraph, event_id: str) -> int:
    """Return the power level of the event's sender, looking at its ``auth_events``.

    Spec (v2-state-res.md "Reverse topological power ordering", rule 1) and the auth
    rules' reading of power levels: ``users[sender]``, else ``users_default`` (0); with
    no power levels event the room creator has 100 and everyone else 0; v12 creators
    have infinite power. Mirrors Synapse's ``_get_power_level_for_sender``.

    Args:
        graph: The auth graph.
        event_id: The event.

    Returns:
        The sender's power level (``CREATOR_POWER_LEVEL`` for a v12 creator).
    """
    event = graph.event_map[event_id]
    sender = str_field(event, "sender")
    create_id = graph.auth_event_of_type(event_id, (CREATE, ""))
    create = graph.event_map[create_id] if create_id is not None else None
    if create is not None and graph.room_version.hydra and _is_creator(graph, create, sender):
        return CREATOR_POWER_LEVEL
    pl_id = graph.auth_event_of_type(event_id, (POWER_LEVELS, ""))
    if pl_id is None:
        if create is not None and not graph.room_version.hydra:
            return 100 if _is_creator(graph, create, sender) else 0
        return 0
    content = content_of(graph.event_map[pl_id])
    users = content.get("users")
    level = users.get(sender) if isinstance(users, Mapping) else None
    if level is None:
        level = content.get("users_default", 0)
    return _to_int(level, 0)


def reverse_topological_power_sort(
    graph: AuthGraph, power_events: Iterable[str], full_conflicted: frozenset[str]
) -> list[str]:
    """Select the power events and their conflicted auth ancestors, and sort them.

    Spec (v2-state-res.md "Algorithm" step 1 and "Reverse topological power
    ordering"): Kahn's algorithm over the auth DAG, taking at each step the smallest
    ready event by (higher sender power level, smaller ``origin_server_ts``, smaller
    event ID).

    Like Synapse (``_add_event_and_auth_chain_to_graph``), the auth chain of a power
    event is walked only through events of the full conflicted set, and the DAG's
    edges are the direct auth edges among those events.

    Args:
        graph: The auth graph.
        power_events: The power events of the full conflicted set.
        full_conflicted: The full conflicted set.

    Returns:
        The sorted event IDs, earliest first.
    """
    nodes = graph.ancestors(power_events, within=full_conflicted)
    remaining: dict[str, int] = {}
    dependants: dict[str, list[str]] = {}
    for event_id in nodes:
        parents = graph.auth_ids(event_id)
        count = 0
        for auth_id in parents:
            if auth_id in nodes:
                count += 1
                dependants.setdefault(auth_id, []).append(event_id)
        remaining[event_id] = count

    def sort_key(event_id: str) -> tuple[int, int, str]:
        event = graph.event_map[event_id]
        power = sender_power_level(graph, event_id)
        return (-power, int_field(event, "origin_server_ts"), event_id)

    heap = [sort_key(e) for e, n in remaining.items() if n == 0]
    heapq.heapify(heap)
    ordered: list[str] = []
    while heap:
        event_id = heapq.heappop(heap)[2]
        ordered.append(event_id)
        for child in dependants.get(event_id, ()):
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(heap, sort_key(child))
    return ordered


def mainline_sort(
    graph: AuthGraph, event_ids: Iterable[str], power_levels: str | None
) -> list[str]:
    """Sort events by the mainline ordering based on ``power_levels``.

    Spec (v2-state-res.md "Mainline ordering"): the mainline of *P* is *P* and its
    chain of ``m.room.power_levels`` auth events; an event's mainline position is that
    of the closest power levels event in its own power-levels auth chain that is on
    the mainline (∞ if none). Order: greater position first (i.e. based on an earlier
    mainline event), then smaller ``origin_server_ts``, then smaller event ID.

    Like Synapse we number the mainline from its oldest end (1, 2, ...; 0 for "not
    based on the mainline", the spec's ∞) and also test the event itself; the events
    sorted here are never power levels events, so that is the spec's *e*₁ onwards.
    Positions of power levels events are memoised: each is walked once.

    Args:
        graph: The auth graph.
        event_ids: The events to sort.
        power_levels: The resolved ``m.room.power_levels`` event ID, if any.

    Returns:
        The sorted event IDs.
    """
    mainline: dict[str, None] = {}  # insertion-ordered set; guards against cycles
    current = power_levels
    while current is not None and current not in mainline:
        mainline[current] = None
        current = graph.auth_event_of_type(current, (POWER_LEVELS, ""))
    depth = {event_id: len(mainline) - position for position, event_id in enumerate(mainline)}

    def mainline_depth(event_id: str) -> int:
        walked: dict[str, None] = {}  # insertion-ordered set; guards against cycles
        current: str | None = event_id
        found = 0
        while current is not None and current not in walked:
            known = depth.get(current)
            if known is not None:
                found = known
                break
            walked[current] = None
            current = graph.auth_event_of_type(current, (POWER_LEVELS, ""))
        for walked_id in walked:
            depth[walked_id] = found
        return found

    def sort_key(event_id: str) -> tuple[int, int, str]:
        ts = int_field(graph.event_map[event_id], "origin_server_ts")
        return (mainline_depth(event_id), ts, event_id)

    return sorted(event_ids, key=sort_key)
