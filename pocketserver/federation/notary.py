"""Answering ``/_matrix/key/v2/query``: other servers' keys, countersigned by us.

Spec: server-server-api.md "Querying Keys Through Another Server" (keys_query.yaml).
Our own keys are answered directly. For another server, the answers we stored are
served as received plus our signature; the server is asked again first when what we
hold does not reach ``minimum_valid_until_ts`` (the current time when not given), or,
without one, when the answer is past half its lifetime (keys_server.yaml: notaries
"should cache a response for half of its lifetime"). If the server cannot be reached
we serve what we have, even expired ("Notary servers can return keys for servers that
are offline").

A notary asks each server itself, never another notary (as Synapse).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import trio

from pocketserver.core.identifiers import is_valid_server_name
from pocketserver.federation.keyring import Keyring
from pocketserver.storage.server_keys import StoredKey

MAX_SERVERS_PER_QUERY = 100
"""A query naming more servers is refused (each one may cost an outbound request)."""

REFRESH_TIMEOUT_S = 20.0
"""How long a query waits for the servers asked again; then it answers with what it
has, before the asking server gives up on us."""

KeyQuery = Mapping[str, Mapping[str, int | None]]
"""server name -> key ID -> ``minimum_valid_until_ts`` (None: not given). An empty
inner mapping asks for all of the server's keys; its ``""`` entry, if any, carries
the minimum for them all (the GET form's query parameter)."""


def _needs_refresh(rows: list[StoredKey], kids: Mapping[str, int | None], now: int) -> bool:
    by_kid = {row.key.key_id: row for row in rows}
    wanted: list[tuple[StoredKey | None, int | None]]
    if set(kids) <= {""}:
        if not rows:
            return True
        newest = max(rows, key=lambda r: r.key.valid_until_ts)
        wanted = [(newest, kids.get(""))]
    else:
        wanted = [(by_kid.get(kid), ts) for kid, ts in kids.items()]
    for row, minimum in wanted:
        if row is None:
            return True
        if minimum is not None:
            if row.key.valid_until_ts < minimum:
                return True
        elif row.key.valid_until_ts < now or (row.added_ts + row.key.valid_until_ts) / 2 < now:
            return True
    return False


async def answer_query(
    keyring: Keyring, query: KeyQuery, now: int, own_valid_until_ts: int
) -> list[dict[str, object]]:
    """The ``server_keys`` list for a notary query (the caller checked its size).

    Args:
        keyring: Our keyring.
        query: What was asked (see :data:`KeyQuery`).
        now: The current time (POSIX ms).
        own_valid_until_ts: The ``valid_until_ts`` of our own keys' answer.
    """
    stale = []
    for server, kids in query.items():
        if server == keyring.server_name or not is_valid_server_name(server):
            continue
        if _needs_refresh(await keyring.stored_keys(server), kids, now):
            stale.append(server)
    if stale:
        with trio.move_on_after(REFRESH_TIMEOUT_S):
            await keyring.refresh(stale)
    out: list[dict[str, object]] = []
    for server, kids in query.items():
        if server == keyring.server_name:
            out.append(keyring.own_keys_response(own_valid_until_ts))
            continue
        if not is_valid_server_name(server):
            continue
        key_ids = [kid for kid in kids if kid] or None
        for text in await keyring.stored_answers(server, key_ids):
            out.append(keyring.sign(json.loads(text)))
    return out
