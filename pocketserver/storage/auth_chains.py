"""The auth-chain index (migration 027), kept as events are stored: the positions
and links that ``storage/auth_chain_queries.py`` answers auth chains and the auth
difference from, as integer rows, without loading events.

A chain cover of the auth DAG of state events (the idea of Synapse's
``event_auth_chains`` / ``event_auth_chain_links``; see ``schema/027_*.sql``): each
indexed state event has a position ``(chain, seq)``; an event reaches every event
below it on its chain, and a link ``(oc, os) -> (tc, ts)`` says the events from
``(oc, os)`` up reach ``(tc, ts)``. A set of events reaches, per chain, a prefix: its
*reach* is ``chain -> highest sequence number reached``.

An event is indexed when it is stored if all its auth events are indexed; otherwise it
waits in ``event_auth_chain_pending`` (marked ready again when an auth event of it is
indexed) for :func:`index_pending`. An indexed event only reaches indexed events, so
a question about a set of events walks ``event_auth`` through the unindexed ones only
(none, once the backlog is done) and answers the rest from the index.

Room v12 PDUs never cite the create event; like the pure core's ``AuthGraph`` (and
Synapse), its implied edge counts as an auth edge here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence

_CHUNK = 500


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def implied_create(room_id: str, event_type: str) -> str | None:
    """The create event a v12 event cites implicitly (room ID ``!x`` -> ``$x``).

    Room v12 room IDs carry no server name (rooms/v12.md "Room IDs"), older ones do,
    so the form of the room ID tells the versions apart."""
    if event_type == "m.room.create" or not room_id.startswith("!") or ":" in room_id:
        return None
    return "$" + room_id[1:]


# --- writing ----------------------------------------------------------------------------


def index_event(
    conn: sqlite3.Connection,
    event_id: str,
    room_id: str,
    key: tuple[str, str],
    auth_ids: Sequence[str],
    *,
    was_pending: bool = False,
) -> bool:
    """Index a stored state event, or put it in the pending table.

    Args:
        conn: The write connection, in the transaction that stored the event.
        event_id: The event.
        room_id: Its room.
        key: Its ``(type, state_key)``.
        auth_ids: Its listed auth event IDs.
        was_pending: It is in the pending table (:func:`index_pending`).

    Returns:
        True if it was indexed; False if it waits for an auth event.
    """
    auth = list(dict.fromkeys(auth_ids))
    create = implied_create(room_id, key[0])
    if create is not None and create not in auth and create != event_id:
        auth.append(create)
    placed = _auth_positions(conn, auth)
    if len(placed) < len(auth):
        conn.execute(
            "INSERT OR IGNORE INTO event_auth_chain_pending (event_id, room_id, blocked)"
            " VALUES (?, ?, 1)",
            (event_id, room_id),
        )
        return False
    chain, seq = _place(conn, key, placed)
    conn.execute(
        "INSERT INTO event_auth_chains (event_id, chain_id, sequence_number) VALUES (?, ?, ?)",
        (event_id, chain, seq),
    )
    _add_links(conn, chain, seq, [pos for _, pos in placed.values()])
    if was_pending:
        conn.execute("DELETE FROM event_auth_chain_pending WHERE event_id = ?", (event_id,))
    # Events that waited for this one may now be indexed: mark them ready. Looked up
    # from the (usually empty) blocked side, which the event_auth key serves.
    if conn.execute("SELECT 1 FROM event_auth_chain_pending WHERE blocked = 1 LIMIT 1").fetchone():
        conn.execute(
            "UPDATE event_auth_chain_pending SET blocked = 0 WHERE blocked = 1 AND EXISTS"
            " (SELECT 1 FROM event_auth a WHERE a.event_id = event_auth_chain_pending.event_id"
            " AND a.auth_id = ?)",
            (event_id,),
        )
        if key == ("m.room.create", "") and implied_create(room_id, "") == event_id:
            # v12: every event of the room cites its create event implicitly.
            conn.execute(
                "UPDATE event_auth_chain_pending SET blocked = 0 WHERE room_id = ?", (room_id,)
            )
    return True


def _auth_positions(
    conn: sqlite3.Connection, auth: Sequence[str]
) -> dict[str, tuple[tuple[str, str | None], tuple[int, int]]]:
    """Indexed auth events: ID -> ((type, state_key), (chain, seq))."""
    found: dict[str, tuple[tuple[str, str | None], tuple[int, int]]] = {}
    for chunk in _chunks(auth):
        marks = ",".join("?" * len(chunk))
        for event_id, etype, state_key, chain, seq in conn.execute(
            "SELECT e.event_id, e.type, e.state_key, c.chain_id, c.sequence_number"
            " FROM events e JOIN event_auth_chains c ON c.event_id = e.event_id"
            f" WHERE e.event_id IN ({marks})",
            chunk,
        ):
            found[event_id] = ((etype, state_key), (int(chain), int(seq)))
    return found


def _place(
    conn: sqlite3.Connection,
    key: tuple[str, str],
    placed: Mapping[str, tuple[tuple[str, str | None], tuple[int, int]]],
) -> tuple[int, int]:
    """The new event's position: on top of an auth event of its own key that is the
    last of its chain (so the chain stays a sequence each citing the one before), or
    the start of a new chain."""
    for auth_key, (chain, seq) in placed.values():
        if auth_key != key:
            continue
        top = conn.execute(
            "SELECT max(sequence_number) FROM event_auth_chains WHERE chain_id = ?", (chain,)
        ).fetchone()[0]
        if top == seq:
            return chain, seq + 1
    row = conn.execute("SELECT max(chain_id) FROM event_auth_chains").fetchone()
    return int(row[0] or 0) + 1, 1


def _add_links(
    conn: sqlite3.Connection, chain: int, seq: int, auth_positions: Sequence[tuple[int, int]]
) -> None:
    """Link the new event to its auth events on other chains, skipping a link that an
    auth event higher on the same chain, or an existing link from below the event on
    its own chain, already implies."""
    highest: dict[int, int] = {}
    for auth_chain, auth_seq in auth_positions:
        if auth_chain != chain and auth_seq > highest.get(auth_chain, 0):
            highest[auth_chain] = auth_seq
    rows = []
    for auth_chain, auth_seq in highest.items():
        implied = (
            seq > 1
            and conn.execute(
                "SELECT 1 FROM event_auth_chain_links WHERE origin_chain_id = ?"
                " AND target_chain_id = ? AND origin_sequence_number < ?"
                " AND target_sequence_number >= ? LIMIT 1",
                (chain, auth_chain, seq, auth_seq),
            ).fetchone()
        )
        if not implied:
            rows.append((chain, seq, auth_chain, auth_seq))
    conn.executemany(
        "INSERT OR IGNORE INTO event_auth_chain_links (origin_chain_id, origin_sequence_number,"
        " target_chain_id, target_sequence_number) VALUES (?, ?, ?, ?)",
        rows,
    )


def index_pending(conn: sqlite3.Connection, limit: int = 500) -> int:
    """Index up to ``limit`` pending events that are ready, oldest (by depth) first.

    An event that still waits for an auth event is marked blocked until that auth
    event is indexed. Bounded work for one write transaction.

    Returns:
        How many pending events were looked at (0: nothing is ready).
    """
    rows = conn.execute(
        "SELECT p.event_id, p.room_id, e.type, e.state_key FROM event_auth_chain_pending p"
        " JOIN events e ON e.event_id = p.event_id WHERE p.blocked = 0"
        " ORDER BY e.depth, e.stream_ordering LIMIT ?",
        (limit,),
    ).fetchall()
    for event_id, room_id, etype, state_key in rows:
        auth_ids = [
            a
            for (a,) in conn.execute(
                "SELECT auth_id FROM event_auth WHERE event_id = ?", (event_id,)
            )
        ]
        # Marked blocked first: index_event clears the row when it succeeds.
        conn.execute(
            "UPDATE event_auth_chain_pending SET blocked = 1 WHERE event_id = ?", (event_id,)
        )
        index_event(conn, event_id, room_id, (etype, state_key or ""), auth_ids, was_pending=True)
    # A pending row whose event is gone (purged) would never be ready.
    return len(rows)


def pending_count(conn: sqlite3.Connection) -> int:
    """State events not indexed yet (for statistics and tests)."""
    return int(conn.execute("SELECT count(*) FROM event_auth_chain_pending").fetchone()[0])
