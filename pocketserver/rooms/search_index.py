"""Keeping the full-text index in step with rooms: a room writer transaction hook.

client-server-api/modules/search.md "room_events": searchable are ``content.body``
of ``m.room.message``, ``content.name`` of ``m.room.name`` and, of
``m.room.topic``, ``content.topic`` and the text/plain body in ``m.topic``. Only
accepted events of the graph are indexed (live and backfilled); a redaction that
applies removes its target (rooms/fragments/v3-handling-redactions.md), judged by the
power levels in the state *before the redaction* (a late or forked redaction is
judged where it stands in the DAG, not by today's state).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping

from pocketserver.core.redaction import redaction_applies
from pocketserver.core.room_versions import UnsupportedRoomVersion, get_room_version
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.storage import search as search_store
from pocketserver.storage import state as state_store

PL, CREATE = "m.room.power_levels", "m.room.create"
MAX_INDEXED_CHARS = 4096
"""Only the start of very long texts is indexed (keeps the index small)."""


def _content(pdu: Mapping[str, object]) -> Mapping[str, object]:
    content = pdu.get("content")
    return content if isinstance(content, Mapping) else {}


def searchable_text(pdu: Mapping[str, object]) -> tuple[str, str] | None:
    """(key, text) to index for an event, or None if it has nothing searchable."""
    etype = pdu.get("type")
    content = _content(pdu)
    if etype == "m.room.message":
        body = content.get("body")
        return ("content.body", body[:MAX_INDEXED_CHARS]) if isinstance(body, str) else None
    if etype == "m.room.name" and pdu.get("state_key") == "":
        name = content.get("name")
        return ("content.name", name[:MAX_INDEXED_CHARS]) if isinstance(name, str) else None
    if etype == "m.room.topic" and pdu.get("state_key") == "":
        texts = []
        topic = content.get("topic")
        if isinstance(topic, str):
            texts.append(topic)
        rich = content.get("m.topic")
        parts = rich.get("m.text") if isinstance(rich, Mapping) else None
        for part in parts if isinstance(parts, list) else []:
            if (
                isinstance(part, Mapping)
                and part.get("mimetype", "text/plain") == "text/plain"
                and isinstance(part.get("body"), str)
                and part["body"] not in texts
            ):
                texts.append(part["body"])
        return ("content.topic", "\n".join(texts)[:MAX_INDEXED_CHARS]) if texts else None
    return None


def index_event(conn: sqlite3.Connection, event: PersistedEvent) -> None:
    """The room writer hook (runs inside each event's write transaction)."""
    if not event.accepted or event.outlier:
        return
    pdu = event.pdu
    if pdu.get("type") == "m.room.redaction":
        _apply_redaction(conn, event)
        return
    found = searchable_text(pdu)
    if found is not None:
        search_store.index_text(conn, event.stream_ordering, *found)


def _apply_redaction(conn: sqlite3.Connection, event: PersistedEvent) -> None:
    pdu = event.pdu
    target_id = pdu.get("redacts") or _content(pdu).get("redacts")
    if not isinstance(target_id, str):
        return
    row = conn.execute(
        "SELECT json FROM events WHERE event_id = ? AND room_id = ?", (target_id, event.room_id)
    ).fetchone()
    if row is None:
        return
    target = json.loads(str(row[0]))
    version_row = conn.execute(
        "SELECT room_version FROM rooms WHERE room_id = ?", (event.room_id,)
    ).fetchone()
    if version_row is None:
        return
    version = str(version_row[0])
    try:
        get_room_version(version)
    except UnsupportedRoomVersion:
        return
    pl, create = _power_and_create(conn, event.room_id, version, event.state_before)
    if create is None:
        return
    if redaction_applies(pdu, target, version, pl, create):
        search_store.unindex_event(conn, target_id)


def _power_and_create(
    conn: sqlite3.Connection, room_id: str, version: str, state_group: int | None
) -> tuple[Mapping[str, object] | None, Mapping[str, object] | None]:
    """The power levels content and the create PDU in the state group before the
    redaction (the current state if it has none)."""
    if state_group is not None:
        state = state_store.get_group_state(conn, state_group)
        ids = {t: state[(t, "")] for t in (PL, CREATE) if (t, "") in state}
        rows = [
            (t, row[0])
            for t, eid in ids.items()
            if (
                row := conn.execute("SELECT json FROM events WHERE event_id = ?", (eid,)).fetchone()
            )
        ]
    else:
        rows = conn.execute(
            "SELECT c.type, e.json FROM current_state c JOIN events e"
            " ON e.event_id = c.event_id WHERE c.room_id = ? AND c.state_key = ''"
            " AND c.type IN ('m.room.power_levels', 'm.room.create')",
            (room_id,),
        ).fetchall()
    found = {str(r[0]): json.loads(str(r[1])) for r in rows}
    create = found.get("m.room.create")
    if create is None and get_room_version(version).hydra:
        row = conn.execute(
            "SELECT json FROM events WHERE room_id = ? AND type = 'm.room.create'"
            " AND state_key = '' ORDER BY stream_ordering LIMIT 1",
            (room_id,),
        ).fetchone()
        create = json.loads(str(row[0])) if row else None
    pl_event = found.get("m.room.power_levels")
    pl_content = pl_event.get("content") if isinstance(pl_event, dict) else None
    return (pl_content if isinstance(pl_content, Mapping) else None), create
