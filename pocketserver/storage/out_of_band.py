"""Out-of-band memberships: our users' invites, knocks and their withdrawals in rooms
this server does not hold (schema 024; rooms/out_of_band.py is the service).

The member event is stored as an outlier in ``events`` (its stream ordering is the
membership's position in the sync stream); the table keeps the latest one per user
and room with the stripped state shown to the client.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from pocketserver.storage import events as event_store


@dataclass(frozen=True, slots=True)
class OutOfBandMembership:
    user_id: str
    room_id: str
    event_id: str
    membership: str
    room_version: str
    stream_ordering: int
    stripped_state: list[dict[str, object]]
    servers: list[str]


def _row(row: Sequence[object]) -> OutOfBandMembership:
    state = json.loads(str(row[6]))
    servers = json.loads(str(row[7]))
    return OutOfBandMembership(
        user_id=str(row[0]),
        room_id=str(row[1]),
        event_id=str(row[2]),
        membership=str(row[3]),
        room_version=str(row[4]),
        stream_ordering=int(str(row[5])),
        stripped_state=[s for s in state if isinstance(s, dict)],
        servers=[str(s) for s in servers],
    )


_COLUMNS = (
    "user_id, room_id, event_id, membership, room_version, stream_ordering, stripped_state, servers"
)


def store(
    conn: sqlite3.Connection,
    *,
    user_id: str,
    room_id: str,
    event_id: str,
    pdu: dict[str, object],
    room_version: str,
    stripped_state: Sequence[dict[str, object]],
    servers: Sequence[str],
    now_ms: int,
) -> int:
    """Store the member event as an outlier (unless known already) and make it the
    user's membership in the room; return its stream ordering."""
    row = conn.execute(
        "SELECT stream_ordering FROM events WHERE event_id = ?", (event_id,)
    ).fetchone()
    if row is not None:
        stream = int(row[0])
    else:
        stream = event_store.insert_event(
            conn,
            event_id,
            room_id,
            pdu,
            depth=_int(pdu.get("depth")),
            prev_ids=[],
            auth_ids=[],
            received_ms=now_ms,
            outlier=True,
        )
    content = pdu.get("content")
    membership = content.get("membership") if isinstance(content, dict) else None
    conn.execute(
        f"INSERT OR REPLACE INTO out_of_band_memberships ({_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            user_id,
            room_id,
            event_id,
            str(membership),
            room_version,
            stream,
            json.dumps(list(stripped_state)),
            json.dumps(list(servers)),
        ),
    )
    return stream


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def get(conn: sqlite3.Connection, user_id: str, room_id: str) -> OutOfBandMembership | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM out_of_band_memberships WHERE user_id = ? AND room_id = ?",
        (user_id, room_id),
    ).fetchone()
    return _row(row) if row else None


def of_user(conn: sqlite3.Connection, user_id: str) -> list[OutOfBandMembership]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM out_of_band_memberships WHERE user_id = ?", (user_id,)
    )
    return [_row(r) for r in rows]


def member_stream_ordering(conn: sqlite3.Connection, room_id: str, user_id: str) -> int | None:
    """The stream ordering of the user's member event in the room's current state
    (rooms this server holds), to compare with an out-of-band one."""
    row = conn.execute(
        "SELECT e.stream_ordering FROM current_state c JOIN events e ON e.event_id = c.event_id"
        " WHERE c.room_id = ? AND c.type = 'm.room.member' AND c.state_key = ?",
        (room_id, user_id),
    ).fetchone()
    return int(row[0]) if row else None
