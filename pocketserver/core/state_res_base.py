"""Shared pieces of state resolution: event field access and the auth graph.

Spec: content/rooms/fragments/v2-state-res.md ("Definitions": auth chain) and
content/rooms/v1.md ("State resolution"). Events are federation PDUs as plain
mappings; their ID is the key they are stored under in the ``event_map`` (v3+
PDUs carry no ``event_id``).

Everything here is iterative: auth chains can be tens of thousands of events long.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pocketserver.core.room_versions import RoomVersion

__all__ = [
    "CREATE",
    "JOIN_RULES",
    "MEMBER",
    "POWER_LEVELS",
    "AuthGraph",
    "Event",
    "StateKey",
    "StateMap",
    "content_of",
    "int_field",
    "separate",
    "state_key_of",
    "str_field",
]

Event = Mapping[str, object]
"""A PDU as a plain mapping (the room version's federation format)."""
StateKey = tuple[str, str]
"""``(event_type, state_key)``."""
StateMap = Mapping[StateKey, str]
"""``(event_type, state_key) -> event_id``."""

CREATE = "m.room.create"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
MEMBER = "m.room.member"


def str_field(event: Event, name: str) -> str:
    """Read a string field of a PDU.

    Args:
        event: The PDU.
        name: The top-level field, e.g. ``"sender"``.

    Returns:
        The value, or ``""`` if absent or not a string.
    """
    value = event.get(name)
    return value if isinstance(value, str) else ""


def int_field(event: Event, name: str) -> int:
    """Read an integer field of a PDU.

    Args:
        event: The PDU.
        name: The top-level field, e.g. ``"origin_server_ts"`` or ``"depth"``.

    Returns:
        The value, or ``0`` if absent or not an integer.
    """
    value = event.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def content_of(event: Event) -> Mapping[str, object]:
    """Read the ``content`` of a PDU.

    Args:
        event: The PDU.

    Returns:
        The content, or an empty mapping if it is not an object.
    """
    content = event.get("content")
    if isinstance(content, Mapping):
        return content
    return {}


def state_key_of(event: Event) -> StateKey | None:
    """Return the state map key of a PDU.

    Args:
        event: The PDU.

    Returns:
        ``(type, state_key)`` of a state event, or ``None`` for a message event.
    """
    state_key = event.get("state_key")
    if not isinstance(state_key, str):
        return None
    return (str_field(event, "type"), state_key)


def _listed_auth_ids(event: Event) -> list[str]:
    """The IDs in ``auth_events``: plain strings (v3+) or ``[id, hashes]`` pairs (v1/v2)."""
    raw = event.get("auth_events")
    out: list[str] = []
    if not isinstance(raw, list):
        return out
    for item in raw:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list | tuple) and item and isinstance(item[0], str):
            out.append(item[0])
    return out


class AuthGraph:
    """The auth-event edges among the events of one resolution, computed once.

    Room v12 PDUs never list the create event in ``auth_events``; its ID is implied by
    the room ID (rooms/v12.md "Authorisation rules", rule 2). Synapse's
    ``EventBase.auth_event_ids()`` adds that implied create event to every v12 event's
    auth events, so its auth chains, sender power levels and auth difference all see
    the create event. The spec's "Auth chain" definition only follows listed
    ``auth_events``; we follow Synapse for interop (CORE_API.md), which changes nothing
    in practice because the create event is in every state set anyway.

    Only edges to events present in ``event_map`` are kept (an absent auth event
    cannot be used; Synapse skips it the same way).
    """

    __slots__ = ("_edges", "event_map", "room_version")

    def __init__(self, room_version: RoomVersion, event_map: Mapping[str, Event]) -> None:
        """Index the auth edges of every event in ``event_map``.

        Args:
            room_version: The room's version (selects the v12 implied create edge).
            event_map: Event ID -> PDU for every event taking part.
        """
        self.room_version = room_version
        self.event_map = event_map
        self._edges: dict[str, tuple[str, ...]] = {}
        for event_id, event in event_map.items():
            ids = _listed_auth_ids(event)
            if room_version.hydra and str_field(event, "type") != CREATE:
                room_id = str_field(event, "room_id")
                if room_id.startswith("!"):
                    ids.append("$" + room_id[1:])
            # dict.fromkeys de-duplicates while keeping the listed order.
            self._edges[event_id] = tuple(a for a in dict.fromkeys(ids) if a in event_map)

    def auth_ids(self, event_id: str) -> tuple[str, ...]:
        """Return the auth event IDs of an event that are in the event map.

        Args:
            event_id: The event.

        Returns:
            The IDs in listed order (v12: the implied create event last); empty for
            an unknown event.
        """
        return self._edges.get(event_id, ())

    def auth_event_of_type(self, event_id: str, key: StateKey) -> str | None:
        """Find the auth event of a given key, e.g. an event's power levels event.

        Args:
            event_id: The event.
            key: The ``(type, state_key)`` wanted.

        Returns:
            The first such auth event's ID, or ``None``.
        """
        for auth_id in self._edges.get(event_id, ()):
            if state_key_of(self.event_map[auth_id]) == key:
                return auth_id
        return None

    def ancestors(self, start: Iterable[str], *, within: frozenset[str] | None = None) -> set[str]:
        """Return ``start`` and every event reachable from it along auth edges.

        Args:
            start: Event IDs to start from (included in the result if in the map).
            within: If given, only walk through (and return) events in this set.

        Returns:
            The reachable event IDs.
        """
        seen: set[str] = set()
        stack = [e for e in start if e in self._edges and (within is None or e in within)]
        seen.update(stack)
        while stack:
            for auth_id in self._edges[stack.pop()]:
                if auth_id not in seen and (within is None or auth_id in within):
                    seen.add(auth_id)
                    stack.append(auth_id)
        return seen


def separate(
    state_sets: Sequence[StateMap], *, missing_key_conflicts: bool
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split state sets into the unconflicted state map and the conflicted state.

    Args:
        state_sets: The state maps to resolve.
        missing_key_conflicts: v2 (rooms/fragments/v2-state-res.md "Unconflicted state
            map and conflicted state set"): a key is unconflicted only if it is present
            in *every* set with the same value, so a key missing from some set is
            conflicted. v1 (rooms/v1.md "State resolution"): a conflict is only
            "different event_ids for the same key", so a key present in some sets
            with one value is unconflicted.

    Returns:
        ``(unconflicted, conflicted)``: key -> event ID, and key -> set of the
        event IDs the sets hold for it.
    """
    if not state_sets:
        return {}, {}
    # Keys with the same value in every set, found with C-level set operations: most
    # of a large room's state is shared by all the sets.
    shared = set(state_sets[0].items())
    for state_set in state_sets[1:]:
        shared.intersection_update(state_set.items())
    unconflicted: dict[StateKey, str] = dict(shared)
    conflicted: dict[StateKey, set[str]] = {}
    for key in set().union(*state_sets).difference(unconflicted):
        ids = {state_set[key] for state_set in state_sets if key in state_set}
        if len(ids) == 1 and not missing_key_conflicts:
            unconflicted[key] = next(iter(ids))
        else:
            conflicted[key] = ids
    return unconflicted, conflicted
