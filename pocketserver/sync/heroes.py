"""Lazy-loaded /sync: the member events of a room summary's heroes.

A client names a room without a name or alias (a DM) after its ``m.heroes``; with
lazy loading it only has the members of timeline senders, so the heroes' member events
come along when the device was not sent them (as Synapse's ``compute_summary``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from pocketserver.sync.rooms import RoomSection, RoomSyncer


async def add_hero_members(
    syncer: RoomSyncer,
    sections: dict[str, object],
    summaries: Mapping[str, Mapping[str, object]],
) -> None:
    """Lazy loading: add the current member events of each summary's heroes that the
    section does not carry and the device was not sent, so that a client can name
    an unnamed room (a DM) with display names (as Synapse's ``compute_summary``)."""
    for room_id, summary in summaries.items():
        section = sections.get(room_id)
        heroes = summary.get("m.heroes")
        if not isinstance(section, RoomSection) or not isinstance(heroes, list):
            continue
        have = {
            str(ev.pdu.get("state_key"))
            for ev in (*section.state, *section.timeline)
            if ev.pdu.get("type") == "m.room.member"
        }
        missing = [h for h in heroes if isinstance(h, str) and h not in have]
        if not missing:
            continue
        current = await syncer.store.current_state_ids(room_id)
        memory = syncer.sent_members
        wanted = {
            h: current[("m.room.member", h)]
            for h in missing
            if ("m.room.member", h) in current
            and (memory is None or not memory.known(room_id, h, current[("m.room.member", h)]))
        }
        found = await syncer.reader.get_events(wanted.values())
        extra = [found[e] for e in wanted.values() if e in found]
        if not extra:
            continue
        if memory is not None:
            for ev in extra:
                memory.mark(room_id, str(ev.pdu.get("state_key")), ev.event_id)
        sections[room_id] = replace(section, state=[*section.state, *extra])
