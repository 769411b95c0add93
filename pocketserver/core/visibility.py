"""History visibility: may a user (or a remote server) see an event?

Spec: content/client-server-api/modules/history_visibility.md ("Room History
Visibility", "Server behaviour"). The rules depend on the room state *at the event*:
the ``m.room.history_visibility`` value and the user's membership there. The storage
layer looks those up (cheaply, two state keys per event) and passes them in as
values; nothing here does I/O.

"At the event" means the state *after* the event (for a state event: including
it), which is what Synapse uses: "Checks are performed with the state of the
``m.room.history_visibility`` event when the event in question is added to the DAG".

Erasure, redaction, ignored users and retention are not decided here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pocketserver.core.locality import server_of

__all__ = [
    "HISTORY_VISIBILITY_VALUES",
    "ServerVisibilityContext",
    "UserVisibilityContext",
    "effective_history_visibility",
    "filter_events_for_client",
    "filter_events_for_server",
    "is_event_visible_to_server",
    "is_event_visible_to_user",
]

WORLD_READABLE = "world_readable"
SHARED = "shared"
INVITED = "invited"
JOINED = "joined"
HISTORY_VISIBILITY_VALUES = frozenset({WORLD_READABLE, SHARED, INVITED, JOINED})
"""The four ``history_visibility`` values the spec defines."""

_E = TypeVar("_E", bound=Mapping[str, object])


def effective_history_visibility(value: object) -> str:
    """Return the ``history_visibility`` in force for a raw value.

    Spec ("Server behaviour"): "By default if no ``history_visibility`` is set, or if
    the value is not understood, the visibility is assumed to be ``shared``."

    Args:
        value: ``content.history_visibility`` of the ``m.room.history_visibility``
            event in the state, or ``None`` if there is none.

    Returns:
        One of ``world_readable``, ``shared``, ``invited``, ``joined``.
    """
    if isinstance(value, str) and value in HISTORY_VISIBILITY_VALUES:
        return value
    return SHARED


@dataclass(frozen=True, slots=True)
class UserVisibilityContext:
    """What the storage layer knows about one user and one event.

    Attributes:
        history_visibility: The raw ``history_visibility`` in the state at (after)
            the event; ``None`` if the room has none.
        membership: The user's ``membership`` in the state at (after) the event;
            ``None`` if they have no member event there.
        joined_later: The user joined the room at some point after the event (spec
            rule 3, for ``shared``). Synapse approximates this by "the user is joined
            now"; a caller may do the same.
        prev_history_visibility: Only for ``m.room.history_visibility`` events: the
            raw value in the state *before* the event (``None`` if none).
        prev_membership: Only for the user's own ``m.room.member`` events: their
            membership *before* the event (``None`` if none).
    """

    history_visibility: str | None
    membership: str | None
    joined_later: bool = False
    prev_history_visibility: str | None = None
    prev_membership: str | None = None


def _allowed(visibility: str, membership: str | None, joined_later: bool) -> bool:
    """The spec's five rules ("Server behaviour") for one visibility and membership."""
    if visibility == WORLD_READABLE:  # 1
        return True
    if membership == "join":  # 2
        return True
    if visibility == SHARED and joined_later:  # 3
        return True
    return membership == "invite" and visibility == INVITED  # 4, else 5: deny


def is_event_visible_to_user(
    user_id: str, event: Mapping[str, object], context: UserVisibilityContext
) -> bool:
    """Decide whether ``user_id`` may see ``event``.

    Spec (history_visibility.md "Server behaviour"):

    1. ``world_readable``: allow. 2. The user's membership was ``join``: allow.
    3. ``shared`` and the user joined at any point after the event: allow.
    4. Membership ``invite`` and ``invited``: allow. 5. Otherwise deny.

    For ``m.room.history_visibility`` events the visibility before *or* after the
    event may allow it; for the user's own ``m.room.member`` events, the membership
    before *or* after the event may allow it.

    Two deviations follow Synapse (``synapse/visibility.py``), as CORE_API.md asks
    where the spec and Synapse differ:

    - For a history visibility event, the *before* value only counts through rules 1
      and 3 (``world_readable``, or ``shared`` and joined later), as in Synapse's
      ``_check_history_visibility``; the membership rules use the value *after* the
      event. (The spec would also let an invitee see a change away from
      ``invited``.)
    - The user's own ``leave`` that follows an ``invite`` is always visible
      (``_check_membership``), so a rejected invite disappears from their client
      even when the visibility is ``joined``.

    Args:
        user_id: The user asking.
        event: The event (client or PDU format; ``type``, ``state_key`` and
            ``content.membership`` are read).
        context: The state at the event for this user.

    Returns:
        True if the user may see the event.
    """
    visibility = effective_history_visibility(context.history_visibility)
    memberships = {context.membership}
    is_state = isinstance(event.get("state_key"), str)
    event_type = event.get("type")
    if is_state and event_type == "m.room.history_visibility":
        before = effective_history_visibility(context.prev_history_visibility)
        if before == WORLD_READABLE or (before == SHARED and context.joined_later):
            return True
    if is_state and event_type == "m.room.member" and event.get("state_key") == user_id:
        content = event.get("content")
        after = content.get("membership") if isinstance(content, Mapping) else None
        memberships = {after if isinstance(after, str) else None, context.prev_membership}
        if after == "leave" and context.prev_membership in ("join", "invite"):
            return True
    return any(_allowed(visibility, m, context.joined_later) for m in memberships)


def filter_events_for_client(
    user_id: str,
    events: Iterable[_E],
    context_for: Callable[[_E], UserVisibilityContext],
) -> list[_E]:
    """Keep the events ``user_id`` may see, in order.

    Args:
        user_id: The user asking.
        events: The events.
        context_for: Returns the state at an event for this user (a cheap lookup
            the storage layer prepares, e.g. from a dict keyed by event ID).

    Returns:
        The visible events, in their original order.
    """
    return [e for e in events if is_event_visible_to_user(user_id, e, context_for(e))]


@dataclass(frozen=True, slots=True)
class ServerVisibilityContext:
    """What the storage layer knows about one event for a remote server.

    Attributes:
        history_visibility: The raw ``history_visibility`` at (after) the event;
            ``None`` if the room has none.
        memberships: ``(user_id, membership)`` at the event for users of the remote
            server (users of other servers are ignored, so passing all members works
            too, only slower). Only read for ``invited`` and ``joined``.
    """

    history_visibility: str | None
    memberships: Sequence[tuple[str, str]] = ()


def is_event_visible_to_server(server_name: str, context: ServerVisibilityContext) -> bool:
    """Decide whether the remote server ``server_name`` may see an event.

    A server may see an event if any of its users could (history_visibility.md
    "Server behaviour", applied per user): ``world_readable`` and ``shared`` events
    are visible (the server asks because it is or was in the room, and ``shared``
    history is open to anyone who joins later); for ``invited`` one of its users must
    have been invited or joined at the event, for ``joined`` joined. This is the rule
    of Synapse's ``filter_events_for_server`` / ``event_visible_to_server``.

    Args:
        server_name: The remote server.
        context: The state at the event.

    Returns:
        True if the server may see the event.
    """
    visibility = effective_history_visibility(context.history_visibility)
    if visibility in (WORLD_READABLE, SHARED):
        return True
    for user_id, membership in context.memberships:
        if server_of(user_id) != server_name:
            continue
        if membership == "join" or (visibility == INVITED and membership == "invite"):
            return True
    return False


def filter_events_for_server(
    server_name: str,
    events: Iterable[_E],
    context_for: Callable[[_E], ServerVisibilityContext],
) -> list[_E]:
    """Keep the events the remote server ``server_name`` may see, in order.

    Args:
        server_name: The remote server.
        events: The events.
        context_for: Returns the state at an event (see ``ServerVisibilityContext``).

    Returns:
        The visible events, in their original order.
    """
    return [e for e in events if is_event_visible_to_server(server_name, context_for(e))]
