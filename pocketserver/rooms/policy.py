"""Which policy server a room uses, read from its state (spec v1.18, server-server-api.md
"Determining if a Policy Server is enabled in a room"). The rules are in
:mod:`pocketserver.core.policy_server`; this module only reads the events they need."""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.core.policy_server import (
    POLICY_EVENT_TYPE,
    PolicyServer,
    policy_from_content,
    via_is_joined,
)
from pocketserver.rooms.store import RoomStore, StateKey


async def room_policy(
    store: RoomStore, state: Mapping[StateKey, str], own_server_name: str
) -> PolicyServer | None:
    """The policy server the room uses in ``state`` (its current state, or for a local
    event the state before it), or None: no valid ``m.room.policy``, ``via`` is this
    server, or ``via`` has no joined user in ``state``."""
    policy_id = state.get((POLICY_EVENT_TYPE, ""))
    if policy_id is None:
        return None
    policy_event = await store.get_event(policy_id)
    if policy_event is None:
        return None
    policy = policy_from_content(policy_event.pdu.get("content"), own_server_name)
    if policy is None:
        return None
    suffix = ":" + policy.server_name
    member_ids = [
        eid
        for (etype, skey), eid in state.items()
        if etype == "m.room.member" and skey.endswith(suffix)
    ]
    members = await store.get_events(member_ids)
    contents = {str(ev.state_key): ev.pdu.get("content") for ev in members.values()}
    return policy if via_is_joined(policy.server_name, contents) else None
