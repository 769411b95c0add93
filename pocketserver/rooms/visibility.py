"""History visibility on read paths: which events a user may see (core.visibility rules
fed with the state after each event)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pocketserver.core.visibility import UserVisibilityContext, is_event_visible_to_user
from pocketserver.rooms.reading import ReadEvent
from pocketserver.rooms.store import RoomStore, StateKey


def _content(pdu: Mapping[str, object]) -> Mapping[str, object]:
    content = pdu.get("content")
    return content if isinstance(content, Mapping) else {}


async def _visibility_at(
    store: RoomStore, state: Mapping[StateKey, str], user_id: str
) -> tuple[str, str | None]:
    hv_id = state.get(("m.room.history_visibility", ""))
    member_id = state.get(("m.room.member", user_id))
    found = await store.get_events([i for i in (hv_id, member_id) if i])
    hv = _content(found[hv_id].pdu).get("history_visibility") if hv_id in found else None
    membership = _content(found[member_id].pdu).get("membership") if member_id in found else None
    return (
        hv if isinstance(hv, str) else "shared",
        membership if isinstance(membership, str) else None,
    )


async def filter_visible(
    store: RoomStore, user_id: str, events: Sequence[ReadEvent], *, joined_now: bool
) -> list[ReadEvent]:
    """The events ``user_id`` may see, in the given order.

    Args:
        joined_now: whether the user is joined to the room now (``shared`` history is
            visible to members who joined after the event).
    """
    result = []
    for ev in events:
        stored = await store.get_event(ev.event_id)
        if stored is None:
            continue
        state = await store.group_state(stored.state_after)
        visibility, membership = await _visibility_at(store, state, user_id)
        context = UserVisibilityContext(
            history_visibility=visibility, membership=membership, joined_later=joined_now
        )
        if is_event_visible_to_user(user_id, ev.pdu, context):
            result.append(ev)
    return result
