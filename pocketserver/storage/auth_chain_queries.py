"""Questions to the auth-chain index (``storage/auth_chains.py``, migration 027):
auth chains and the auth difference of state resolution v2, from integer rows.

A set of events reaches, per chain, a prefix: its *reach* is ``chain -> highest
sequence number reached``, found by following links (``(oc, os) -> (tc, ts)``: the
events from ``(oc, os)`` up reach ``(tc, ts)``). Events not indexed yet are walked
through ``event_auth`` as before; an indexed event only reaches indexed events.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from typing import TypeVar

from pocketserver.storage.auth_chains import implied_create

T = TypeVar("T")

Reach = dict[int, int]
"""chain ID -> highest sequence number reached on it."""

_CHUNK = 500


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


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
