"""State groups (snapshots and deltas) and the current state of each room.

See ``schema/002_rooms.sql`` for the storage rule that keeps state storage within
2x of one row per state change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]

SNAPSHOT_MIN_CHAIN = 100


def get_group_state(conn: sqlite3.Connection, group_id: int) -> dict[StateKey, str]:
    """The full state of a group: its snapshot with every delta up to it applied."""
    rows = conn.execute(
        """
        WITH RECURSIVE chain(id, n) AS (
            SELECT ?, 0
            UNION ALL
            SELECT g.prev_group, chain.n + 1 FROM state_groups g JOIN chain ON g.id = chain.id
            WHERE g.prev_group IS NOT NULL
        )
        SELECT e.type, e.state_key, e.event_id
        FROM state_group_edits e JOIN chain ON e.group_id = chain.id
        ORDER BY chain.n DESC
        """,
        (group_id,),
    )
    state: dict[StateKey, str] = {}
    for etype, state_key, event_id in rows:
        if event_id is None:
            state.pop((etype, state_key), None)
        else:
            state[(etype, state_key)] = event_id
    return state


def group_info(conn: sqlite3.Connection, group_id: int) -> tuple[int, int]:
    """(chain_length, size) of a group."""
    row = conn.execute(
        "SELECT chain_length, size FROM state_groups WHERE id = ?", (group_id,)
    ).fetchone()
    if row is None:
        raise KeyError(f"no state group {group_id}")
    return int(row[0]), int(row[1])


def state_delta(old: StateMap, new: StateMap) -> dict[StateKey, str | None]:
    """What changes ``old`` into ``new`` (None: the key is removed)."""
    delta: dict[StateKey, str | None] = {k: v for k, v in new.items() if old.get(k) != v}
    for k in old:
        if k not in new:
            delta[k] = None
    return delta


def create_group(
    conn: sqlite3.Connection,
    room_id: str,
    state: StateMap,
    prev_group: int | None = None,
    prev_state: StateMap | None = None,
    *,
    delta: Mapping[StateKey, str | None] | None = None,
) -> int:
    """Store ``state`` as a new group: a delta on ``prev_group`` or, past the chain limit,
    a snapshot. ``prev_state`` must be the full state of ``prev_group`` when given;
    ``delta``, if the caller knows it, is ``state_delta(prev_state, state)`` (saves a
    walk over both states).
    """
    if prev_group is not None and prev_state is not None:
        if delta is None:
            delta = state_delta(prev_state, state)
        chain, _ = group_info(conn, prev_group)
        if chain + len(delta) <= max(SNAPSHOT_MIN_CHAIN, len(state)):
            cur = conn.execute(
                "INSERT INTO state_groups (room_id, prev_group, chain_length, size)"
                " VALUES (?, ?, ?, ?)",
                (room_id, prev_group, chain + len(delta), len(state)),
            )
            group_id = int(cur.lastrowid or 0)
            conn.executemany(
                "INSERT INTO state_group_edits (group_id, type, state_key, event_id)"
                " VALUES (?, ?, ?, ?)",
                [(group_id, t, sk, eid) for (t, sk), eid in delta.items()],
            )
            return group_id
    cur = conn.execute(
        "INSERT INTO state_groups (room_id, prev_group, chain_length, size) VALUES (?, NULL, 0, ?)",
        (room_id, len(state)),
    )
    group_id = int(cur.lastrowid or 0)
    conn.executemany(
        "INSERT INTO state_group_edits (group_id, type, state_key, event_id) VALUES (?, ?, ?, ?)",
        [(group_id, t, sk, eid) for (t, sk), eid in state.items()],
    )
    return group_id


def get_current_state_ids(conn: sqlite3.Connection, room_id: str) -> dict[StateKey, str]:
    rows = conn.execute(
        "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?", (room_id,)
    )
    return {(t, sk): eid for t, sk, eid in rows}


def get_current_state_event_id(
    conn: sqlite3.Connection, room_id: str, etype: str, state_key: str
) -> str | None:
    row = conn.execute(
        "SELECT event_id FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
        (room_id, etype, state_key),
    ).fetchone()
    return row[0] if row else None


def apply_current_state_delta(
    conn: sqlite3.Connection,
    room_id: str,
    delta: Mapping[StateKey, str | None],
    memberships: Mapping[str, str],
) -> None:
    """Apply a delta to a room's current state; ``memberships`` maps member event IDs
    to their membership, for the ``membership`` column."""
    for (etype, state_key), event_id in delta.items():
        if event_id is None:
            conn.execute(
                "DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
                (room_id, etype, state_key),
            )
        else:
            conn.execute(
                "INSERT OR REPLACE INTO current_state"
                " (room_id, type, state_key, event_id, membership) VALUES (?, ?, ?, ?, ?)",
                (room_id, etype, state_key, event_id, memberships.get(event_id)),
            )


def current_members_page(
    conn: sqlite3.Connection,
    room_id: str,
    after: str,
    limit: int,
    membership: str | None = None,
    not_membership: str | None = None,
) -> list[tuple[str, str]]:
    """One page of the room's current member events: ``(user ID, event ID)`` with user
    IDs after ``after``, in order (keyset pagination on the primary key, so a page of
    a 50,000-member room costs the same as the first)."""
    sql = (
        "SELECT state_key, event_id FROM current_state WHERE room_id = ?"
        " AND type = 'm.room.member' AND state_key > ?"
    )
    params: list[object] = [room_id, after]
    if membership is not None:
        sql += " AND membership = ?"
        params.append(membership)
    if not_membership is not None:
        sql += " AND membership IS NOT ?"
        params.append(not_membership)
    sql += " ORDER BY state_key LIMIT ?"
    params.append(limit)
    return [(str(a), str(b)) for a, b in conn.execute(sql, params)]


def rooms_for_user(conn: sqlite3.Connection, user_id: str, membership: str = "join") -> list[str]:
    rows = conn.execute(
        "SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = ?"
        " AND membership = ?",
        (user_id, membership),
    )
    return [r[0] for r in rows]


def state_storage_rows(conn: sqlite3.Connection, room_id: str | None = None) -> int:
    """How many state rows are stored (for benchmarks and the admin view)."""
    if room_id is None:
        return int(conn.execute("SELECT count(*) FROM state_group_edits").fetchone()[0])
    return int(
        conn.execute(
            "SELECT count(*) FROM state_group_edits e JOIN state_groups g ON g.id = e.group_id"
            " WHERE g.room_id = ?",
            (room_id,),
        ).fetchone()[0]
    )
