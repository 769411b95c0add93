"""The ``account_data`` tables: users' global and per-room account data, and its stream.

Global account data has the room ID ``''``. Every change takes the next position of
the account data stream (a counter that only grows) and stamps it on the row, so
``/sync`` finds what changed between two positions with one index range scan.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection
from dataclasses import dataclass

GLOBAL = ""
"""The room ID under which global account data is stored."""


Change = Callable[[dict[str, object] | None], dict[str, object] | None]
"""Given an item's content (None if it has none), the new content or None for no change."""


class AccountDataLimitError(Exception):
    """Storing an item would take a user past one of the limits given to :func:`put`."""


@dataclass(frozen=True, slots=True)
class AccountDataRow:
    room_id: str
    """``''`` for global account data."""
    type: str
    content: dict[str, object]
    stream_id: int


def encode(content: dict[str, object]) -> str:
    """The stored (and size-checked) form of a content object: compact JSON."""
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


def _decode(text: str) -> dict[str, object]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def stream_position(conn: sqlite3.Connection) -> int:
    """The position of the last committed change."""
    row = conn.execute("SELECT position FROM account_data_stream WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def _next_position(conn: sqlite3.Connection) -> int:
    conn.execute("UPDATE account_data_stream SET position = position + 1 WHERE id = 1")
    return stream_position(conn)


def get(
    conn: sqlite3.Connection, user_id: str, room_id: str, type_: str
) -> dict[str, object] | None:
    row = conn.execute(
        "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?",
        (user_id, room_id, type_),
    ).fetchone()
    return _decode(str(row[0])) if row else None


def put(
    conn: sqlite3.Connection,
    user_id: str,
    room_id: str,
    type_: str,
    content: dict[str, object],
    max_items: int,
    max_total_bytes: int,
) -> int:
    """Store one item (replacing the earlier one) and return its new stream position.

    Raises:
        AccountDataLimitError: the user would hold more than ``max_items`` items or
            more than ``max_total_bytes`` of content; nothing is changed.
    """
    text = encode(content)
    size = len(text.encode("utf-8"))
    old = conn.execute(
        "SELECT size FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?",
        (user_id, room_id, type_),
    ).fetchone()
    if old is None or size > int(old[0]):
        count, total = conn.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM account_data WHERE user_id = ?",
            (user_id,),
        ).fetchone()
        if old is None and int(count) >= max_items:
            raise AccountDataLimitError(f"at most {max_items} account data items per user")
        if int(total) - (int(old[0]) if old else 0) + size > max_total_bytes:
            raise AccountDataLimitError(f"at most {max_total_bytes} bytes of account data per user")
    position = _next_position(conn)
    conn.execute(
        "INSERT INTO account_data (user_id, room_id, type, content, size, stream_id)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (user_id, room_id, type) DO UPDATE SET"
        " content = excluded.content, size = excluded.size, stream_id = excluded.stream_id",
        (user_id, room_id, type_, text, size, position),
    )
    return position


def update(
    conn: sqlite3.Connection,
    user_id: str,
    room_id: str,
    type_: str,
    change: Change,
    max_items: int,
    max_total_bytes: int,
) -> int | None:
    """Read-modify-write one item in this transaction: ``change(old)`` returns the new
    content, or None to leave the item as it is. Returns the new position, or None."""
    new = change(get(conn, user_id, room_id, type_))
    if new is None:
        return None
    return put(
        conn,
        user_id,
        room_id,
        type_,
        new,
        max_items,
        max_total_bytes,
    )


def changed_between(
    conn: sqlite3.Connection,
    user_id: str,
    since: int | None,
    upto: int,
    whole_rooms: Collection[str] = (),
) -> list[AccountDataRow]:
    """Items changed in ``(since, upto]`` (everything up to ``upto`` for ``since``
    None), plus every item up to ``upto`` of the rooms in ``whole_rooms``."""
    rows = conn.execute(
        "SELECT room_id, type, content, stream_id FROM account_data"
        " WHERE user_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id",
        (user_id, since if since is not None else 0, upto),
    ).fetchall()
    found = {(str(r[0]), str(r[1])): r for r in rows}
    rooms = [r for r in whole_rooms if r != GLOBAL]
    if since is not None and rooms:
        for i in range(0, len(rooms), 500):
            chunk = rooms[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in conn.execute(
                "SELECT room_id, type, content, stream_id FROM account_data"
                f" WHERE user_id = ? AND room_id IN ({marks}) AND stream_id <= ?",
                (user_id, *chunk, upto),
            ):
                found.setdefault((str(r[0]), str(r[1])), r)
    return [
        AccountDataRow(room_id, type_, _decode(str(r[2])), int(r[3]))
        for (room_id, type_), r in sorted(found.items(), key=lambda kv: int(kv[1][3]))
    ]
