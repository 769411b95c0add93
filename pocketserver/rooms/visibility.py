"""History visibility on read paths: which events a user may see (core.visibility rules
fed with the state after each event), and in what form: an event of a user erased at
deactivation (``erase: true``) is shown redacted to anyone who was not joined when it
was sent (as Synapse; the spec leaves erasure to the server: client-server API
"Account deactivation", ``erase``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from pocketserver.core.redaction import redact
from pocketserver.core.visibility import UserVisibilityContext, is_event_visible_to_user
from pocketserver.rooms.reading import ReadEvent
from pocketserver.rooms.store import RoomStore, StateKey
from pocketserver.storage import deactivation


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

    The user's own member events and history visibility changes are judged with the
    state before them too (history_visibility.md "Server behaviour"), so a user
    always sees their own leave, even with ``joined`` visibility.

    Args:
        joined_now: whether the user is joined to the room now (``shared`` history is
            visible to members who joined after the event).
    """
    result = []
    senders = {str(ev.pdu.get("sender")) for ev in events}
    erased = await store.db.read(deactivation.erased_among, senders) if senders else set()
    for ev in events:
        stored = await store.get_event(ev.event_id)
        if stored is None:
            continue
        state = await store.group_state(stored.state_after)
        visibility, membership = await _visibility_at(store, state, user_id)
        prev_visibility: str | None = None
        prev_membership: str | None = None
        if _needs_state_before(ev.pdu, user_id):
            before = await store.group_state(stored.state_before)
            prev_visibility, prev_membership = await _visibility_at(store, before, user_id)
        context = UserVisibilityContext(
            history_visibility=visibility,
            membership=membership,
            joined_later=joined_now,
            prev_history_visibility=prev_visibility,
            prev_membership=prev_membership,
        )
        if is_event_visible_to_user(user_id, ev.pdu, context):
            if membership != "join" and ev.pdu.get("sender") in erased:
                ev = replace(ev, pdu=redact(ev.pdu, ev.room_version))
            result.append(ev)
    return result


def _needs_state_before(pdu: Mapping[str, object], user_id: str) -> bool:
    """History visibility changes and the user's own member events are judged with the
    state before them as well as after."""
    if not isinstance(pdu.get("state_key"), str):
        return False
    kind = pdu.get("type")
    return kind == "m.room.history_visibility" or (
        kind == "m.room.member" and pdu.get("state_key") == user_id
    )
