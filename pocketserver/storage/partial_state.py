"""Partial-state rooms (schema/026_partial_state.sql) and the step that completes one:
the members the resync learnt are added to the room's state groups and current state.

Completing touches the state tables (storage/state.py keeps the group logic); it only
adds entries for keys a group does not have, so it never changes a state that was
complete: the snapshots made since the join get the missing entries (deltas on them
inherit them; a delta or later snapshot that has the key keeps its own value).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from pocketserver.storage.state import StateKey


@dataclass(frozen=True, slots=True)
class PartialRoom:
    room_id: str
    join_event_id: str
    room_version: str
    servers: list[str]


def add_room(
    conn: sqlite3.Connection,
    room_id: str,
    join_event_id: str,
    room_version: str,
    servers: list[str],
    now_ms: int,
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO partial_state_rooms VALUES (?, ?, ?, ?, ?)",
        (room_id, join_event_id, room_version, json.dumps(servers), now_ms),
    )


def remove_room(conn: sqlite3.Connection, room_id: str) -> None:
    conn.execute("DELETE FROM partial_state_rooms WHERE room_id = ?", (room_id,))


def rooms(conn: sqlite3.Connection) -> list[PartialRoom]:
    return [
        PartialRoom(r, e, v, [s for s in json.loads(servers) if isinstance(s, str)])
        for r, e, v, servers in conn.execute(
            "SELECT room_id, join_event_id, room_version, servers FROM partial_state_rooms"
            " ORDER BY since_ts"
        )
    ]


def accepted_state_keys(conn: sqlite3.Connection, event_ids: list[str]) -> dict[str, StateKey]:
    """``event_id -> (type, state_key)`` of the stored, accepted state events among
    ``event_ids``."""
    found: dict[str, StateKey] = {}
    for i in range(0, len(event_ids), 500):
        chunk = event_ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for eid, etype, skey in conn.execute(
            "SELECT event_id, type, state_key FROM events"
            f" WHERE event_id IN ({marks}) AND state_key IS NOT NULL AND rejected IS NULL",
            chunk,
        ):
            found[eid] = (etype, skey)
    return found


def complete_room(
    conn: sqlite3.Connection,
    room_id: str,
    join_event_id: str,
    missing: Mapping[StateKey, str],
    memberships: Mapping[str, str],
) -> int:
    """Add ``missing`` (state before our join that the partial state lacked) to every
    state group since the join and to the current state where the key is absent, and
    forget the room's partial flag; one write transaction. Returns the entries added
    to the current state.

    A group's ``size`` grows by the entries added to its snapshot (a heuristic for
    when to start a new snapshot; a key a later delta also set is counted twice)."""
    row = conn.execute(
        "SELECT state_before FROM events WHERE event_id = ?", (join_event_id,)
    ).fetchone()
    first_group = row[0] if row and row[0] is not None else None
    added_current = 0
    if first_group is not None:
        snapshots = [
            g
            for (g,) in conn.execute(
                "SELECT id FROM state_groups"
                " WHERE room_id = ? AND id >= ? AND prev_group IS NULL ORDER BY id",
                (room_id, first_group),
            )
        ]
        for group in snapshots:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO state_group_edits (group_id, type, state_key, event_id)"
                " VALUES (?, ?, ?, ?)",
                ((group, t, k, eid) for (t, k), eid in missing.items()),
            )
            grown = conn.total_changes - before
            # This snapshot and the deltas after it (up to the next snapshot).
            nxt = next((g for g in snapshots if g > group), None)
            conn.execute(
                "UPDATE state_groups SET size = size + ?"
                " WHERE room_id = ? AND id >= ? AND (? IS NULL OR id < ?)",
                (grown, room_id, group, nxt, nxt),
            )
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO current_state (room_id, type, state_key, event_id, membership)"
        " VALUES (?, ?, ?, ?, ?)",
        ((room_id, t, k, eid, memberships.get(eid)) for (t, k), eid in missing.items()),
    )
    added_current = conn.total_changes - before
    remove_room(conn, room_id)
    return added_current
