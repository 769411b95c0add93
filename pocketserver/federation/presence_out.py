"""Our users' presence to other servers (server-server-api.md "Presence").

Two things send ``m.presence`` EDUs through the federation sender:

- a change of what others see of one of our users (and the periodic re-announcement,
  see :mod:`pocketserver.ephemeral.presence`) goes to the servers sharing a room with
  them (:meth:`PresenceOut.on_presence`);
- a join changes who shares a room (:meth:`PresenceOut.on_persisted`), as in Synapse's
  presence handler: a server new to the room gets the presence of our users already
  in it, and our user who joins has their presence sent to the other servers in it.
  Without this a server would learn nothing of our users until they next change (the
  spec is silent on joins; Synapse does this, and SyTest's "New federated private
  chats get full presence information (SYN-115)" expects it).

Our users who are offline and were not active for a week, with no status message, are
left out of what a new server gets (what it would assume anyway; Synapse filters the
same way). The writer listener only queues ``(user, room, state group before)``
(bounded: :data:`QUEUE`; past it a join is skipped with a count, the presence then
crosses with the next change). One task reads the room and hands the EDUs over.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from pocketserver.core.locality import server_of
from pocketserver.ephemeral.presence import OFFLINE, PresenceService, PresenceView
from pocketserver.rooms.join_queue import JoinQueue
from pocketserver.rooms.store import RoomStore
from pocketserver.storage import event_stream

log = logging.getLogger(__name__)

QUEUE = 256
STALE_OFFLINE_MS = 7 * 24 * 60 * 60 * 1000
"""An offline user last active longer ago than this is not sent to a new server."""


class PresenceSender(Protocol):
    def send_presence(
        self, state: Mapping[str, object], destinations: Sequence[str] | None = None
    ) -> None: ...

    def send_presence_to(
        self, destination: str, states: Sequence[Mapping[str, object]]
    ) -> None: ...


def worth_sending(view: PresenceView) -> bool:
    """Whether a new server should be told of this presence (not the default)."""
    return (
        view.presence != OFFLINE
        or (view.last_active_ago is not None and view.last_active_ago < STALE_OFFLINE_MS)
        or view.status_msg is not None
    )


class PresenceOut(JoinQueue):
    """See the module docstring. Register :meth:`on_presence` with the presence service
    and :meth:`on_persisted` with the room writer; start :meth:`run` in the server's
    nursery."""

    def __init__(
        self,
        presence: PresenceService,
        room_store: RoomStore,
        sender: PresenceSender,
        server_name: str,
    ) -> None:
        self.presence = presence
        self.store = room_store
        self.sender = sender
        self.server_name = server_name
        super().__init__(QUEUE)

    def on_presence(self, user_id: str, view: PresenceView) -> None:
        """Presence listener: our user's presence to the servers sharing a room."""
        if server_of(user_id) == self.server_name:
            self.sender.send_presence(view.to_edu(user_id))

    what = "presence"

    def wants(self, user_id: str) -> bool:
        return self.presence.enabled  # any live join: ours or another server's

    async def _was_joined(self, user_id: str, before: int | None) -> bool:
        if before is None:
            return False
        state = await self.store.group_state(before)
        prior_id = state.get(("m.room.member", user_id))
        prior = await self.store.get_event(prior_id) if prior_id else None
        content = prior.pdu.get("content") if prior is not None else None
        return isinstance(content, dict) and content.get("membership") == "join"

    async def handle(self, user_id: str, room_id: str, before: int | None) -> None:
        if await self._was_joined(user_id, before):
            return  # a profile change, not a join
        joiner_server = server_of(user_id)
        if joiner_server is None:
            return
        members = await self.store.db.read(event_stream.joined_members, room_id)
        if joiner_server == self.server_name:
            servers = {s for m in members if (s := server_of(m)) and s != self.server_name}
            # A room joined with partial state knows few members yet: the servers the
            # resident named in its send_join answer are in it too (as the sender's
            # RoomServers counts them).
            servers |= set(self.store.partial_rooms.get(room_id, ())) - {self.server_name, ""}
            if servers:
                view = self.presence.get(user_id)
                self.sender.send_presence(view.to_edu(user_id), sorted(servers))
            return
        if any(m != user_id and server_of(m) == joiner_server for m in members):
            return  # that server was in the room already and knows our users' presence
        states = []
        for member in members:
            if server_of(member) == self.server_name:
                view = self.presence.get(member)
                if worth_sending(view):
                    states.append(view.to_edu(member))
        self.sender.send_presence_to(joiner_server, states)
