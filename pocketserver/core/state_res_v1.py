"""State resolution v1 (room version 1).

Spec: content/rooms/v1.md "State resolution". Known to reset state in some cases
(the spec's warning); kept only for v1 rooms. Where the spec is silent we follow
Synapse's ``synapse/state/v1.py`` for interop (noted at each place).
"""

from __future__ import annotations

import hashlib
from collections import ChainMap
from collections.abc import Mapping, Sequence

from pocketserver.core.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth_against_state,
)
from pocketserver.core.room_versions import RoomVersion
from pocketserver.core.state_res_base import (
    CREATE,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    Event,
    StateKey,
    StateMap,
    int_field,
    separate,
    state_key_of,
)

__all__ = ["resolve_v1"]


def _order_key(event_id: str, event: Event) -> tuple[int, str]:
    """Highest ``depth`` first, then lowest ``sha1(event_id)`` (hex digest of UTF-8)."""
    digest = hashlib.sha1(event_id.encode("utf-8")).hexdigest()
    return (-int_field(event, "depth"), digest)


def _allowed(version: RoomVersion, event: Event, state: Mapping[StateKey, Event]) -> bool:
    """Would ``event`` be allowed by the authorisation rules for a room in state *R*?

    The rules read *R* itself, not the event's own ``auth_events`` (so the rules on
    the shape of those, rule 2 / v12 rule 3, do not apply): this is
    ``check_auth_against_state``, like Synapse's ``check_state_dependent_auth_rules``
    in ``synapse/state/v1.py``.
    """
    # Only the keys the rules read (auth events selection + the create event): the
    # checker validates every entry it is given, and R holds the whole room.
    wanted = [*auth_types_for_event(version.identifier, event), (CREATE, "")]
    auth = {key: state[key] for key in wanted if key in state}
    try:
        check_auth_against_state(version.identifier, event, auth)
    except AuthError:
        return False
    return True


def _resolve_auth_conflict(
    version: RoomVersion, events: list[tuple[str, Event]], state: dict[StateKey, Event]
) -> str:
    """Resolve one conflicted key of power levels, join rules or membership.

    Spec (rooms/v1.md "State resolution"): sort by ascending ``depth`` then descending
    ``sha1(event_id)``; add the first event to *R*; for each subsequent event, if it
    is allowed in *R* update *R* with it and continue, otherwise stop.
    """
    ordered = sorted(events, key=lambda item: _order_key(*item), reverse=True)
    current_id, current = ordered[0]
    local: ChainMap[StateKey, Event] = ChainMap({}, state)  # an overlay: R is not copied
    for event_id, event in ordered[1:]:
        key = state_key_of(current)
        if key is not None:
            local[key] = current
        if not _allowed(version, event, local):
            break
        current_id, current = event_id, event
    return current_id


def _resolve_other_conflict(
    version: RoomVersion, events: list[tuple[str, Event]], state: Mapping[StateKey, Event]
) -> str:
    """Resolve a conflicted key of any other type.

    Spec (rooms/v1.md "State resolution"): pick the event with the highest depth and
    lowest ``sha1(event_id)`` that passes authentication in *R*. The spec does not say
    what happens when none passes; like Synapse (``_resolve_normal_events``) we then
    take the last in that order (lowest depth, highest hash).
    """
    ordered = sorted(events, key=lambda item: _order_key(*item))
    for event_id, event in ordered:
        if _allowed(version, event, state):
            return event_id
    return ordered[-1][0]


_PASS_POWER_LEVELS, _PASS_JOIN_RULES, _PASS_MEMBERS, _PASS_OTHERS = range(4)


def _pass_of(key: StateKey) -> int:
    """Which pass of the v1 algorithm resolves a conflicted key (as in Synapse: power
    levels with the empty state key, then join rules and members of any state key)."""
    if key == (POWER_LEVELS, ""):
        return _PASS_POWER_LEVELS
    if key[0] == JOIN_RULES:
        return _PASS_JOIN_RULES
    if key[0] == MEMBER:
        return _PASS_MEMBERS
    return _PASS_OTHERS


def resolve_v1(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
) -> dict[StateKey, str]:
    """Resolve state sets with the room v1 algorithm.

    Spec (rooms/v1.md "State resolution"): *R* starts as the union of the states
    without the conflicting events; then conflicts between power levels, then join
    rules, then memberships are resolved in turn, each pass seeing the result of the
    previous ones; all other conflicts are resolved last. As in Synapse, the
    memberships (and the join rules) are each resolved against *R* as it was before
    that pass, so the order of keys within a pass does not matter.

    Args:
        room_version: The room version (``state_res`` V1).
        state_sets: The state maps to resolve.
        event_map: The events (at least those of the state sets).

    Returns:
        The resolved state map.
    """
    if len(state_sets) == 1:
        return dict(state_sets[0])
    unconflicted, conflicted_ids = separate(state_sets, missing_key_conflicts=False)
    conflicted = {
        key: [(e, event_map[e]) for e in sorted(ids) if e in event_map]
        for key, ids in conflicted_ids.items()
    }
    state: dict[StateKey, Event] = {
        key: event_map[e] for key, e in unconflicted.items() if e in event_map
    }
    resolved: dict[StateKey, str] = {}
    for auth_pass in (_PASS_POWER_LEVELS, _PASS_JOIN_RULES, _PASS_MEMBERS):
        this_pass = {
            key: _resolve_auth_conflict(room_version, events, state)
            for key, events in conflicted.items()
            if events and _pass_of(key) == auth_pass
        }
        resolved.update(this_pass)
        state.update((key, event_map[e]) for key, e in this_pass.items())
    for key, events in conflicted.items():
        if events and key not in resolved:
            resolved[key] = _resolve_other_conflict(room_version, events, state)
    result = dict(unconflicted)
    result.update(resolved)
    return result
