"""Which servers an event of ours goes to: the servers of the members joined to the
room in the state before the event (so a ban of a server's last member still
reaches it, as Synapse's ``get_hosts_in_room_at_events`` on the prev events), plus
the formerly invited user's server when an invite is rescinded (the invite itself went
there by ``/invite``) (server-server-api.md "Room State Resolution" and
"Inviting to a room": the servers in the room receive each new event).
"""

from __future__ import annotations

from pocketserver.cache import LruCache, MemoryBudget
from pocketserver.rooms.store import RoomStore
from pocketserver.storage import events as event_store
from pocketserver.storage.federation_sender import LiveEvent

SERVERS_CACHE_SHARE = 0.005


def server_of(user_id: str) -> str:
    """The server part of a user ID ("" for a malformed one)."""
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def _servers_size(servers: frozenset[str]) -> int:
    return 120 + sum(80 + len(s) for s in servers)


class RoomServers:
    """Servers joined to a room at a state group, cached per group (groups never change)."""

    def __init__(self, store: RoomStore, ours: str, budget: MemoryBudget | None = None) -> None:
        self._store = store
        self._ours = ours
        self._cache: LruCache[int, frozenset[str]] = (
            budget.cache("federation_servers_at", SERVERS_CACHE_SHARE, _servers_size)
            if budget is not None
            else LruCache("federation_servers_at", 256 << 10, _servers_size)
        )

    async def joined_at(self, group: int, room_id: str | None = None) -> frozenset[str]:
        """The other servers (not ours) with a member joined at ``group``; in a room
        joined with a partial state (``room_id`` given), also the servers the resident
        named in it (Synapse's ``get_partial_state_servers_at``), and nothing cached:
        the group gains its members when the resync ends."""
        partial = self._store.partial_rooms.get(room_id) if room_id is not None else None
        cached = self._cache.get(group) if partial is None else None
        if cached is not None:
            return cached
        state = await self._store.group_state(group)
        members = {eid: key[1] for key, eid in state.items() if key[0] == "m.room.member"}
        # Memberships read in SQL: a big room has tens of thousands of members.
        memberships = await self._store.db.read(event_store.memberships_of, members)
        servers = frozenset(
            server_of(members[eid]) for eid, m in memberships.items() if m == "join"
        ) - {self._ours, ""}
        if partial is not None:
            return servers | (frozenset(partial) - {self._ours, ""})
        self._cache.set(group, servers)
        return servers

    async def for_event(self, ev: LiveEvent) -> frozenset[str]:
        """The destinations of our event ``ev`` (never our server)."""
        if ev.state_before is None:
            return frozenset()  # a create event: nobody else can be in the room yet
        servers = await self.joined_at(ev.state_before, ev.room_id)
        if ev.type != "m.room.member" or ev.state_key is None:
            return servers
        target = server_of(ev.state_key)
        if target in servers or target in (self._ours, ""):
            return servers
        # The invitee's server got the invite itself through /invite (federation/
        # remote_memberships.py), never in a transaction: it is not in the room, and
        # Synapse sends it none either (SyTest's server stalls on a PDU of a room it does
        # not know). A rescinded invite does go to it, as Synapse's sender does.
        if (
            ev.membership == "leave"
            and ev.sender != ev.state_key
            and await self._was_invited(ev.state_before, ev.state_key)
        ):
            return servers | {target}
        return servers

    async def _was_invited(self, group: int, user_id: str) -> bool:
        state = await self._store.group_state(group)
        eid = state.get(("m.room.member", user_id))
        if eid is None:
            return False
        ev = await self._store.get_event(eid)
        return ev is not None and _membership(ev.pdu) == "invite"


def _membership(pdu: dict[str, object]) -> object:
    content = pdu.get("content")
    return content.get("membership") if isinstance(content, dict) else None
