"""Another server's room aliases: ``GET /_matrix/federation/v1/query/directory``.

server-server-api.md "Querying for information" (query-directory): the alias's own
server answers the room ID and a list of servers in the room that a joining server
may ask. As Synapse (handlers/directory.py ``get_association``): the remote's 404 is
our 404 ``M_NOT_FOUND``; a server ``federation_domain_whitelist`` leaves out is 403
``M_FORBIDDEN`` (nothing is sent); any other failure (unreachable, another error, a bad
answer) is 502 ``M_UNKNOWN`` "Failed to fetch alias".
"""

from __future__ import annotations

import logging

from pocketserver.core.identifiers import is_valid_room_alias, is_valid_room_id
from pocketserver.core.locality import server_of
from pocketserver.errors import MatrixError, forbidden, not_found
from pocketserver.federation.errors import FederationBlocked, FederationError, FederationHttpError
from pocketserver.federation.requests import JsonRequests

log = logging.getLogger(__name__)

QUERY_TIMEOUT_S = 30.0
QUERY_MAX_BYTES = 256 << 10
MAX_SERVERS = 64
"""The most servers of an answer kept (a join tries them in order)."""


def _failed(alias: str) -> MatrixError:
    return MatrixError(502, "M_UNKNOWN", f"Failed to fetch alias {alias}")


async def query_remote_alias(client: JsonRequests, alias: str) -> tuple[str, list[str]]:
    """The room ID and the servers in it for another server's ``alias``.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` (not an alias), 404 ``M_NOT_FOUND`` (the
            alias's server does not know it), 502 ``M_UNKNOWN`` (any other failure).
    """
    server = server_of(alias) if is_valid_room_alias(alias) else None
    if not server:
        raise MatrixError(400, "M_INVALID_PARAM", f"not a room alias: {alias!r}")
    try:
        answer = await client.get_json(
            server,
            "/_matrix/federation/v1/query/directory",
            query={"room_alias": alias},
            timeout_s=QUERY_TIMEOUT_S,
            max_size=QUERY_MAX_BYTES,
        )
    except FederationHttpError as e:
        if e.status == 404:
            raise not_found(f"Room alias {alias} not found") from None
        log.info("directory query for %s failed: %s", alias, e)
        raise _failed(alias) from None
    except FederationBlocked:
        raise forbidden(f"Federation denied with {server}") from None
    except FederationError as e:
        log.info("directory query for %s failed: %s", alias, e)
        raise _failed(alias) from None
    room_id = answer.get("room_id") if isinstance(answer, dict) else None
    if not isinstance(room_id, str) or not is_valid_room_id(room_id):
        log.info("directory query for %s: no room ID in the answer", alias)
        raise _failed(alias)
    servers_in = answer.get("servers")
    servers = (
        [s for s in servers_in if isinstance(s, str) and s] if isinstance(servers_in, list) else []
    )
    # The alias's server first if it did not list itself: it answered, so it is up.
    ordered = list(dict.fromkeys([*servers, server]))[:MAX_SERVERS]
    return room_id, ordered
