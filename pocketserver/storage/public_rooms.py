"""Listing the published room directory: rooms ordered by joined members (most
first), then room ID, with keyset pagination over that order."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

_STATE_TEXT = (
    "(SELECT json_extract(e.json, '{path}') FROM current_state c"
    " JOIN events e ON e.event_id = c.event_id"
    " WHERE c.room_id = d.room_id AND c.type = '{etype}' AND c.state_key = '')"
)

_NAME = _STATE_TEXT.format(path="$.content.name", etype="m.room.name")
_TOPIC = _STATE_TEXT.format(path="$.content.topic", etype="m.room.topic")
_ALIAS = _STATE_TEXT.format(path="$.content.alias", etype="m.room.canonical_alias")
_TYPE = _STATE_TEXT.format(path="$.content.type", etype="m.room.create")
_FEDERATE = _STATE_TEXT.format(path='$.content."m.federate"', etype="m.room.create")

_LISTING = f"""
WITH listing AS (
    SELECT d.room_id AS room_id,
        (SELECT count(*) FROM current_state c WHERE c.room_id = d.room_id
            AND c.type = 'm.room.member' AND c.membership = 'join') AS joined,
        lower(coalesce({_NAME}, '') || ' ' || coalesce({_TOPIC}, '')
            || ' ' || coalesce({_ALIAS}, '') || ' ' || d.room_id) AS words,
        {_TYPE} AS room_type,
        coalesce({_FEDERATE}, 1) AS federate
    FROM {{source}} d
)
"""

_SOURCES = {
    "main": "room_directory",
    # An application service's network (third_party_instance_id): its own list.
    "network": "(SELECT room_id FROM appservice_room_list"
    " WHERE appservice_id = ? AND network_id = ?)",
    # include_all_networks: the main list and every service's.
    "all": "(SELECT room_id FROM room_directory UNION SELECT room_id FROM appservice_room_list)",
}


@dataclass(frozen=True, slots=True)
class Position:
    """A place in the listing order: (joined members, room ID)."""

    joined: int
    room_id: str


@dataclass(frozen=True, slots=True)
class ListingQuery:
    term: str | None = None
    room_types: Sequence[str | None] | None = None
    network: tuple[str, str] | None = None
    """(application service ID, network ID): that network's list instead of the main one."""
    all_networks: bool = False
    federatable_only: bool = False
    excluded: tuple[str, ...] = ()
    """Rooms left out (those whose server ACL denies the server asking)."""
    """Leave out rooms created with ``m.federate: false`` (a listing for another server,
    as Synapse's ``ignore_non_federatable``)."""


def _filters(q: ListingQuery) -> tuple[str, list[object]]:
    clauses: list[str] = []
    args: list[object] = []
    if q.term:
        clauses.append("instr(words, lower(?)) > 0")
        args.append(q.term)
    if q.federatable_only:
        clauses.append("federate IS NOT 0")
    if q.excluded:
        clauses.append(f"room_id NOT IN ({','.join('?' * len(q.excluded))})")
        args.extend(q.excluded)
    if q.room_types is not None:
        named = [t for t in q.room_types if t is not None]
        options = []
        if named:
            options.append(f"room_type IN ({','.join('?' * len(named))})")
            args.extend(named)
        if None in q.room_types:
            options.append("room_type IS NULL")
        clauses.append("(" + " OR ".join(options) + ")" if options else "0")
    return (" AND ".join(clauses) or "1"), args


def list_page(
    conn: sqlite3.Connection,
    q: ListingQuery,
    after: Position | None,
    before: Position | None,
    limit: int,
) -> list[Position]:
    """Up to ``limit + 1`` rooms after ``after`` (forwards) or before ``before``
    (backwards, returned in listing order)."""
    where, args = _filters(q)
    if q.network is not None:
        source, args = _SOURCES["network"], [*q.network, *args]
    else:
        source = _SOURCES["all" if q.all_networks else "main"]
    if after is not None:
        where += " AND (joined < ? OR (joined = ? AND room_id > ?))"
        args += [after.joined, after.joined, after.room_id]
        order = "joined DESC, room_id ASC"
    elif before is not None:
        where += " AND (joined > ? OR (joined = ? AND room_id < ?))"
        args += [before.joined, before.joined, before.room_id]
        order = "joined ASC, room_id DESC"
    else:
        order = "joined DESC, room_id ASC"
    rows = conn.execute(
        _LISTING.format(source=source)
        + f"SELECT joined, room_id FROM listing WHERE {where} ORDER BY {order} LIMIT ?",
        [*args, limit + 1],
    ).fetchall()
    found = [Position(int(r[0]), str(r[1])) for r in rows]
    if before is not None:
        found.reverse()
    return found


def listed_rooms_with_acl(conn: sqlite3.Connection) -> list[str]:
    """Rooms of the directory (any network) that have a server ACL."""
    rows = conn.execute(
        "SELECT DISTINCT c.room_id FROM current_state c"
        " WHERE c.type = 'm.room.server_acl' AND c.state_key = ''"
        " AND (c.room_id IN (SELECT room_id FROM room_directory)"
        "      OR c.room_id IN (SELECT room_id FROM appservice_room_list))"
    ).fetchall()
    return [str(r[0]) for r in rows]


def count_published(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM room_directory").fetchone()[0])
