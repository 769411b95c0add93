"""Finding users for ``POST /user_directory/search`` from current room state."""

from __future__ import annotations

import sqlite3

# Rooms whose members anyone may find: public join rule or world-readable history,
# among the rooms one of our users is joined to. A room this server has left is not
# followed any more (its state here is stale), so it no longer counts: Synapse's
# user directory drops a room's users when the server leaves it (SyTest
# 52user-directory/01public.pl "... after server left room").
_OPEN_ROOMS = """
    SELECT c.room_id FROM current_state c JOIN events e ON e.event_id = c.event_id
    WHERE ((c.type = 'm.room.join_rules'
            AND json_extract(e.json, '$.content.join_rule') = 'public')
        OR (c.type = 'm.room.history_visibility'
            AND json_extract(e.json, '$.content.history_visibility') = 'world_readable'))
      AND EXISTS (
        SELECT 1 FROM current_state m JOIN users u ON u.name = m.state_key
        WHERE m.room_id = c.room_id AND m.type = 'm.room.member' AND m.membership = 'join')
"""


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_users(
    conn: sqlite3.Connection, searcher: str, term: str, limit: int
) -> list[tuple[str, str | None, str | None]]:
    """(user_id, display name, avatar URL) of users visible to ``searcher`` whose ID or
    display name contains ``term`` (case-insensitive), at most ``limit + 1`` rows.

    Visible: users sharing a room with the searcher, and users joined to rooms with a
    public join rule or world-readable history (client-server API "User directory")
    that one of our users is still joined to.
    The searcher finds themself only through such open rooms: sharing a private room
    with oneself does not count (as Synapse, whose SyTest suite checks it).
    The display name is the one in a member event of theirs (any of their rooms).
    """
    pattern = f"%{_escape_like(term.lower())}%"
    rows = conn.execute(
        f"""
        WITH open_rooms AS ({_OPEN_ROOMS}),
        shared_rooms AS (
            SELECT room_id FROM current_state
            WHERE type = 'm.room.member' AND state_key = ? AND membership = 'join'
        ),
        candidates AS (
            SELECT c.state_key AS user_id,
                   json_extract(e.json, '$.content.displayname') AS displayname,
                   json_extract(e.json, '$.content.avatar_url') AS avatar_url
            FROM current_state c JOIN events e ON e.event_id = c.event_id
            WHERE c.type = 'm.room.member' AND c.membership = 'join'
              AND (c.room_id IN (SELECT room_id FROM open_rooms)
                   OR (c.state_key != ? AND c.room_id IN (SELECT room_id FROM shared_rooms)))
        )
        SELECT user_id, max(displayname), max(avatar_url) FROM candidates
        WHERE lower(user_id) LIKE ? ESCAPE '\\' OR lower(displayname) LIKE ? ESCAPE '\\'
        GROUP BY user_id
        ORDER BY (lower(displayname) LIKE ? ESCAPE '\\') DESC, user_id
        LIMIT ?
        """,
        (searcher, searcher, pattern, pattern, f"{_escape_like(term.lower())}%", limit + 1),
    ).fetchall()
    return [(str(r[0]), r[1], r[2]) for r in rows]
