"""Other streams' parts of /sync: account data, receipts, typing, presence, to-device...

A :class:`SyncSource` owns one stream (a field of :class:`SyncToken`). After the room
sections are built, each source adds its part to the response for the positions
``(since, upto]`` and says whether it added anything. Sources register with the
:class:`SyncHandler`; the handler stays unaware of what they carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pocketserver.core.event_filter import SyncFilter
from pocketserver.streams.token import SyncToken


@dataclass
class SyncContext:
    user_id: str
    device_id: str
    since: SyncToken | None
    full_state: bool
    filter: SyncFilter
    joined_rooms: list[str]
    """Rooms the user is joined to now (after the room filter)."""
    new_rooms: set[str] = field(default_factory=set)
    """Joined rooms that are sent from scratch in this response (initial sync, newly
    joined, full_state): sources should send their complete current data for these."""
    body: dict[str, object] = field(default_factory=dict)
    newly_joined_users: set[str] = field(default_factory=set)
    """Incremental syncs: other users who joined (or were invited to, or knocked on) a
    joined room, as the response's room sections show (state and timeline): sources
    send their current data for these (presence, as Synapse does)."""
    delivered_upto: dict[str, int] = field(default_factory=dict)
    """Stream -> position: a source that sent only part of ``(since, upto]`` (a bounded
    batch) names the position it reached; the response's token then stops there, so
    the rest comes in the next response."""

    def joined_room_entry(self, room_id: str) -> dict[str, object]:
        """The response's entry for a joined room, created (empty) if it has none."""
        rooms = self.body["rooms"]
        assert isinstance(rooms, dict)
        join = rooms["join"]
        assert isinstance(join, dict)
        entry = join.get(room_id)
        if entry is None:
            entry = {
                "timeline": {"events": [], "limited": False},
                "state": {"events": []},
                "ephemeral": {"events": []},
                "account_data": {"events": []},
            }
            join[room_id] = entry
        assert isinstance(entry, dict)
        return entry

    def room_events(self, room_id: str, section: str) -> list[object]:
        """The ``events`` list of a joined room's section (``ephemeral``, ``account_data``)."""
        entry = self.joined_room_entry(room_id)
        part = entry.setdefault(section, {"events": []})
        assert isinstance(part, dict)
        events = part.setdefault("events", [])
        assert isinstance(events, list)
        return events

    def global_events(self, section: str) -> list[object]:
        """The ``events`` list of a top-level section (``account_data``, ``presence``...)."""
        part = self.body.setdefault(section, {"events": []})
        assert isinstance(part, dict)
        events = part.setdefault("events", [])
        assert isinstance(events, list)
        return events


class SyncSource(Protocol):
    stream: str
    """The name of this source's :class:`SyncToken` field."""

    def position(self) -> int:
        """The stream's committed position now."""
        ...

    async def add_to_sync(self, ctx: SyncContext, since: int | None, upto: int) -> bool:
        """Add what changed in ``(since, upto]`` (or everything, for ``since`` None and
        for ``ctx.new_rooms``) to ``ctx.body``; return True if anything was added."""
        ...
