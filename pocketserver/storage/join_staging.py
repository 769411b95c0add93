"""A scratch SQLite file for the events of a join's answer while they are checked and
stored (federation/join_answer.py): they arrive in any order, are written here as
they come (signatures checked), and are taken out again in depth order, a page at a
time, so that a room's state is never held in memory whole.

The file is private to one join attempt and deleted after it: no journal, no fsync
(a crash loses nothing that matters; the attempt starts over). Plain functions over
its connection, as the other storage modules.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE staged (
    seq INTEGER PRIMARY KEY,          -- arrival order
    event_id TEXT NOT NULL UNIQUE,
    depth INTEGER NOT NULL,
    is_state INTEGER NOT NULL,        -- listed in the answer's state
    type TEXT,
    state_key TEXT,
    pdu TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,  -- handed to the room writer
    accepted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX staged_order ON staged (done, depth, seq);
"""


@dataclass(frozen=True, slots=True)
class StagedRow:
    seq: int
    event_id: str
    depth: int
    pdu: str


def open_scratch(path: Path) -> sqlite3.Connection:
    """A new scratch file at ``path`` (any old one replaced)."""
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -2048")  # 2 MiB: the pages are read once or twice
    conn.executescript(_SCHEMA)
    return conn


def known_ids(conn: sqlite3.Connection, event_ids: Sequence[str]) -> set[str]:
    """Which of ``event_ids`` are staged already."""
    out: set[str] = set()
    for i in range(0, len(event_ids), 500):
        chunk = event_ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        out.update(
            r[0]
            for r in conn.execute(f"SELECT event_id FROM staged WHERE event_id IN ({marks})", chunk)
        )
    return out


def add(
    conn: sqlite3.Connection,
    rows: Iterable[tuple[str, int, bool, str | None, str | None, str]],
) -> None:
    """Stage ``(event_id, depth, is_state, type, state_key, pdu_json)`` rows; an event
    staged before keeps its first copy (marked state if either copy is)."""
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO staged (event_id, depth, is_state, type, state_key, pdu)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (event_id) DO UPDATE SET is_state = max(is_state, excluded.is_state)",
        rows,
    )
    conn.execute("COMMIT")


def count_state(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM staged WHERE is_state").fetchone()[0])


def count_pending(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM staged WHERE NOT done").fetchone()[0])


def next_page(conn: sqlite3.Connection, after: tuple[int, int], limit: int) -> list[StagedRow]:
    """Up to ``limit`` events not done yet, after ``(depth, seq)``, lowest depth first."""
    return [
        StagedRow(*r)
        for r in conn.execute(
            "SELECT seq, event_id, depth, pdu FROM staged"
            " WHERE done = 0 AND (depth, seq) > (?, ?) ORDER BY depth, seq LIMIT ?",
            (*after, limit),
        )
    ]


def mark_done(conn: sqlite3.Connection, outcomes: Iterable[tuple[str, bool]]) -> None:
    """Record ``(event_id, accepted)`` for events the writer has stored."""
    conn.execute("BEGIN")
    conn.executemany(
        "UPDATE staged SET done = 1, accepted = ? WHERE event_id = ?",
        ((int(ok), eid) for eid, ok in outcomes),
    )
    conn.execute("COMMIT")


def accepted_state(conn: sqlite3.Connection) -> Iterable[tuple[str, str, str]]:
    """``(type, state_key, event_id)`` of the accepted state events, in arrival order
    (of two events for one key, the later one wins, as when the answer is read whole)."""
    yield from conn.execute(
        "SELECT type, state_key, event_id FROM staged"
        " WHERE is_state AND accepted AND type IS NOT NULL AND state_key IS NOT NULL"
        " ORDER BY seq"
    )
