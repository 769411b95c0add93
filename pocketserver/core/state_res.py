"""State resolution: the resolved room state of several state sets.

Spec: content/rooms/v1.md "State resolution" (room v1),
content/rooms/fragments/v2-state-res.md (rooms v2-v11) and content/rooms/v12.md
"State resolution" (v2.1). The algorithms live in ``state_res_v1`` and
``state_res_v2`` (graph helpers in ``state_res_graph``); this module picks one by
room version.

Pure and deterministic: the result does not depend on the order of the state sets,
and nothing recurses (auth chains can be tens of thousands of events long).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from pocketserver.core.room_versions import StateResAlgorithm, get_room_version
from pocketserver.core.state_res_base import Event, StateKey, StateMap
from pocketserver.core.state_res_v1 import resolve_v1
from pocketserver.core.state_res_v2 import resolve_v2

__all__ = ["resolve_state"]


def resolve_state(
    room_version: str,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
    *,
    auth_difference: Collection[str] | None = None,
) -> dict[StateKey, str]:
    """Resolve a set of room states into one.

    Args:
        room_version: The room's version identifier (``"1"`` ... ``"12"``).
        state_sets: The states to resolve, each ``(type, state_key) -> event_id``
            (e.g. the states after each of an event's ``prev_events``).
        event_map: Event ID -> PDU for exactly the events of the state sets and
            their full auth chains. For v3+ rooms the PDU has no ``event_id``, so the
            map key is the ID. Rejected events must not appear.
        auth_difference: v2/v2.1 only: the auth difference of the state sets, computed
            by the caller (e.g. from the database's auth-chain index). Then
            ``event_map`` need only hold what the algorithm reads beyond it (delta
            resolution, see ``rooms/resolver.py``): the conflicted events, the auth
            difference, their auth events, the unconflicted events the auth rules
            look up, the power levels events' auth events, transitively, and for v2.1
            the auth chains of the conflicted events.

    Returns:
        The resolved state, ``(type, state_key) -> event_id``. With no state sets it
        is empty; with one it is a copy of that set.

    Raises:
        UnsupportedRoomVersion: ``room_version`` is unknown.

    Events missing from ``event_map`` are left out of the conflicted set and of the
    auth chains (Synapse does the same), never an error.
    """
    version = get_room_version(room_version)
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    if version.state_res is StateResAlgorithm.V1:
        return resolve_v1(version, state_sets, event_map)
    return resolve_v2(version, state_sets, event_map, auth_difference=auth_difference)
