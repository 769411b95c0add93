"""The auth-chain index (migration 026): auth chains and the auth difference from
integer rows, without loading events.

A chain cover of the auth DAG of state events (the idea of Synapse's
``event_auth_chains`` / ``event_auth_chain_links``; see ``schema/026_*.sql``): each
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
import time
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")

Reach = dict[int, int]
"""chain ID -> highest sequence number reached on it."""

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


# --- reading ----------------------------------------------------------------------------
#
# The questions are asked as generators of bounded steps (one query of at most
# ``_CHUNK`` keys and its rows each), so a caller on the event loop can run them a
# time budget at a time (:func:`run_steps` in one ``db.read``, a checkpoint between):
# the auth difference of a 20,000-member room's states then never holds the loop or a
# worker thread for long. Between two runs the connection may differ: the index only
# grows by events that reach older ones, never the other way, so what the events
# asked about reach does not change meanwhile.

Steps = Generator[None, None, T]


class Conn:
    """The connection the steps use; :func:`run_steps` sets it for each run."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection | None = None) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        assert self.conn is not None
        return self.conn.execute(sql, params)


def run_steps(
    conn: sqlite3.Connection, holder: Conn, steps: Steps[T], budget_s: float
) -> tuple[bool, T | None]:
    """Run ``steps`` on ``conn`` for about ``budget_s`` seconds.

    Returns:
        ``(True, result)`` when they ended, else ``(False, None)``: call again.
    """
    holder.conn = conn
    deadline = time.monotonic() + budget_s
    try:
        while True:
            next(steps)
            if time.monotonic() >= deadline:
                return False, None
    except StopIteration as stop:
        return True, stop.value
    finally:
        holder.conn = None


def run_all(conn: sqlite3.Connection, make: Callable[[Conn], Steps[T]]) -> T:
    """Run the steps ``make(holder)`` to the end on ``conn``."""
    holder = Conn(conn)
    steps = make(holder)
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _positions_steps(h: Conn, ids: Sequence[str]) -> Steps[dict[str, tuple[int, int]]]:
    found: dict[str, tuple[int, int]] = {}
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for event_id, chain, seq in h.execute(
            "SELECT event_id, chain_id, sequence_number FROM event_auth_chains"
            f" WHERE event_id IN ({marks})",
            chunk,
        ):
            found[event_id] = (int(chain), int(seq))
        yield
    return found


def _walk(
    h: Conn, seeds: Iterable[str], *, include_seeds: bool
) -> Steps[tuple[set[str], dict[str, tuple[int, int]]]]:
    """Walk ``event_auth`` from ``seeds`` through unindexed events only.

    Returns:
        ``(loose, indexed)``: the unindexed (or unknown) events reached, and the
        positions of the indexed events reached, where the index takes over. Seeds
        themselves count only with ``include_seeds``.
    """
    seeds = list(dict.fromkeys(seeds))
    loose: set[str] = set()
    indexed: dict[str, tuple[int, int]] = {}
    # Without the seeds counted, a seed another seed reaches must still be found.
    seen = set(seeds) if include_seeds else set()
    frontier = seeds
    first = True
    while frontier:
        known = yield from _positions_steps(h, frontier)
        expand: list[str] = []
        for event_id in frontier:
            pos = known.get(event_id)
            counted = include_seeds or not first
            if pos is not None:
                if counted:
                    indexed[event_id] = pos
                else:
                    expand.append(event_id)  # a seed's own auth events still count
            else:
                if counted:
                    loose.add(event_id)
                expand.append(event_id)
        found: list[str] = []
        for chunk in _chunks(expand):
            marks = ",".join("?" * len(chunk))
            for (auth_id,) in h.execute(
                f"SELECT DISTINCT auth_id FROM event_auth WHERE event_id IN ({marks})", chunk
            ):
                if auth_id not in seen:
                    seen.add(auth_id)
                    found.append(auth_id)
            # v12: the implied create edge of the events walked here.
            for room_id, etype in h.execute(
                f"SELECT room_id, type FROM events WHERE event_id IN ({marks})", chunk
            ):
                create = implied_create(room_id, etype)
                if create is not None and create not in seen:
                    seen.add(create)
                    found.append(create)
            yield
        frontier = found
        first = False
    return loose, indexed


def _reach_steps(
    h: Conn, starts: Iterable[tuple[int, int]], floor: Mapping[int, int] | None = None
) -> Steps[Reach]:
    """The reach of the events at ``starts``: chain -> highest sequence number.

    With ``floor`` (the full reach of some other set), only what goes beyond it is
    returned and walked: whatever a position under the floor reaches, the floor's set
    reaches already.
    """
    base = floor or {}
    best: Reach = {}
    for chain, seq in starts:
        if seq > max(base.get(chain, 0), best.get(chain, 0)):
            best[chain] = seq
    work = list(best)
    while work:
        grown: set[int] = set()
        for i in range(0, len(work), _CHUNK):
            chunk = work[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for origin, origin_seq, target, target_seq in h.execute(
                "SELECT origin_chain_id, origin_sequence_number, target_chain_id,"
                " target_sequence_number FROM event_auth_chain_links"
                f" WHERE origin_chain_id IN ({marks})",
                chunk,
            ):
                if origin_seq <= best[origin] and target_seq > max(
                    base.get(target, 0), best.get(target, 0)
                ):
                    best[target] = target_seq
                    grown.add(target)
            yield
        work = list(grown)
    return best


def reach(
    conn: sqlite3.Connection,
    starts: Iterable[tuple[int, int]],
    floor: Mapping[int, int] | None = None,
) -> Reach:
    """:func:`_reach_steps` at once."""
    return run_all(conn, lambda h: _reach_steps(h, starts, floor))


def _events_in(h: Conn, chain: int, low: int, high: int) -> list[str]:
    """The events of ``chain`` with ``low < seq <= high``."""
    rows = h.execute(
        "SELECT event_id FROM event_auth_chains WHERE chain_id = ?"
        " AND sequence_number > ? AND sequence_number <= ?",
        (chain, low, high),
    )
    return [r[0] for r in rows]


def auth_chain_steps(h: Conn, event_ids: Iterable[str]) -> Steps[set[str]]:
    """Every event reachable from ``event_ids`` through auth edges (not themselves,
    unless one reaches another); unknown auth event IDs are included as walked.

    Answered from the index, walking ``event_auth`` only through unindexed events."""
    loose, indexed = yield from _walk(h, event_ids, include_seeds=False)
    chain_ids = set(loose)
    tops = yield from _reach_steps(h, indexed.values())
    for n, (chain, high) in enumerate(tops.items()):
        chain_ids.update(_events_in(h, chain, 0, high))
        if n % 100 == 99:
            yield
    return chain_ids


def get_auth_chain_ids(conn: sqlite3.Connection, event_ids: Iterable[str]) -> set[str]:
    """:func:`auth_chain_steps` at once."""
    return run_all(conn, lambda h: auth_chain_steps(h, event_ids))


def auth_difference_steps(
    h: Conn,
    state_sets: Sequence[Collection[str]],
    unstored: Mapping[str, Sequence[str]] | None = None,
) -> Steps[set[str]]:
    """The auth difference of state resolution v2, from the index.

    Spec (rooms/fragments/v2-state-res.md "Auth difference"): ∪ C_i − ∩ C_i with C_i
    the full auth chain of state set i; like Synapse (and ``core.state_res_graph
    .auth_difference``) a set's own events count as part of its chain.

    The events every set holds reach the same in every chain, so their reach is
    computed once; each set's other events are walked only where they go beyond it.
    Only the events of the difference are listed, never a whole chain.

    Args:
        h: The connection holder.
        state_sets: The event IDs of each state set.
        unstored: Events of the sets not stored yet: ID -> their auth event IDs.

    Returns:
        The event IDs in some but not all of the chains.
    """
    extra = unstored or {}
    sets = [set(s) for s in state_sets]
    yield
    if not sets:
        return set()
    common = sets[0].intersection(*sets[1:])
    yield

    def walk(ids: set[str]) -> Steps[tuple[set[str], dict[str, tuple[int, int]]]]:
        pending = ids & extra.keys()
        loose, indexed = yield from _walk(h, ids - pending, include_seeds=True)
        auth_of_pending = [a for e in pending for a in extra[e]]
        more_loose, more_indexed = yield from _walk(h, auth_of_pending, include_seeds=True)
        return loose | more_loose | pending, indexed | more_indexed

    common_loose, common_indexed = yield from walk(common)
    common_reach = yield from _reach_steps(h, common_indexed.values())
    looses: list[set[str]] = []
    beyond: list[Reach] = []
    for ids in sets:
        loose, indexed = yield from walk(ids - common)
        looses.append(loose | common_loose)
        beyond.append((yield from _reach_steps(h, indexed.values(), common_reach)))
    difference: set[str] = looses[0].union(*looses[1:]) - looses[0].intersection(*looses[1:])
    chains: set[int] = set().union(*beyond)
    for chain in chains:
        tops = [max(b.get(chain, 0), common_reach.get(chain, 0)) for b in beyond]
        if max(tops) > min(tops):
            difference.update(_events_in(h, chain, min(tops), max(tops)))
            yield
    return difference


def auth_difference(
    conn: sqlite3.Connection,
    state_sets: Sequence[Collection[str]],
    unstored: Mapping[str, Sequence[str]] | None = None,
) -> set[str]:
    """:func:`auth_difference_steps` at once."""
    return run_all(conn, lambda h: auth_difference_steps(h, state_sets, unstored))
