"""``GET/POST /publicRooms`` (data/api/client-server/list_public_rooms.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from quart import Blueprint, request

from pocketserver.api.http import access_token, json_body, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.core.identifiers import is_valid_server_name
from pocketserver.errors import bad_json, invalid_param
from pocketserver.federation.remote_public_rooms import RemoteListing
from pocketserver.rooms.public_rooms import ListingQuery, list_public_rooms

bp = Blueprint("public_rooms", __name__)

MAX_TERM_CHARS = 200


def _remote_server() -> str | None:
    """The other server whose directory is asked for (``server``), or None for ours."""
    server = request.args.get("server")
    if not server or server == services().config.server_name:
        return None
    if not is_valid_server_name(server):
        raise invalid_param(f"Invalid server name: {server}")
    return server


def _query_limit(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return _limit(int(raw))
    except ValueError:
        raise invalid_param("limit must be an integer") from None


def _limit(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json("limit must be an integer")
    if value < 0:
        raise invalid_param("limit may not be negative")
    return value


def listing_query(body: Mapping[str, object]) -> ListingQuery:
    """The listing a POST body asks for (filter, third_party_instance_id,
    include_all_networks), also for other servers' POST /publicRooms.

    Raises:
        MatrixError: 400 ``M_BAD_JSON``/``M_INVALID_PARAM`` for bad fields.
    """
    for key in ("include_all_networks",):
        if body.get(key) is not None and not isinstance(body.get(key), bool):
            raise bad_json(f"{key} must be true or false")
    query = _filter(body)
    instance = body.get("third_party_instance_id")
    if instance is not None:
        if not isinstance(instance, str):
            raise bad_json("third_party_instance_id must be a string")
        # "<appservice ID>|<network ID>", as Synapse's ThirdPartyInstanceID (the
        # instance_id that /thirdparty/protocols gives each instance); anything else
        # names no network (an empty list).
        service_id, sep, network_id = instance.partition("|")
        return replace(query, network=(service_id, network_id) if sep else ("", ""))
    if body.get("include_all_networks"):
        return replace(query, all_networks=True)
    return query


def since_token(body: Mapping[str, object]) -> str | None:
    since = body.get("since")
    if since is not None and not isinstance(since, str):
        raise bad_json("since must be a string")
    return since


def _filter(body: Mapping[str, object]) -> ListingQuery:
    flt = body.get("filter")
    if flt is None:
        return ListingQuery()
    if not isinstance(flt, Mapping):
        raise bad_json("filter must be an object")
    term = flt.get("generic_search_term")
    if term is not None and not isinstance(term, str):
        raise bad_json("filter.generic_search_term must be a string")
    if term is not None and len(term) > MAX_TERM_CHARS:
        raise invalid_param(f"generic_search_term is longer than {MAX_TERM_CHARS} characters")
    types = flt.get("room_types")
    if types is not None and (
        not isinstance(types, list) or not all(t is None or isinstance(t, str) for t in types)
    ):
        raise bad_json("filter.room_types must be a list of strings and nulls")
    return ListingQuery(term=(term.strip() or None) if term else None, room_types=types)


@client_route(bp, "/publicRooms", methods=["GET"])
async def get_public_rooms() -> dict[str, object]:
    server = _remote_server()
    if access_token() is not None or server is not None:
        # Another server's directory only for our users (as Synapse).
        await require_auth(allow_guest=True)
    s = services()
    limit = _query_limit(request.args.get("limit"))
    since = request.args.get("since")
    if server is not None:
        return await s.remote_directory.list(server, RemoteListing(limit=limit, since=since))
    return await list_public_rooms(
        s.room_store, s.events, limit=limit, since=since, query=ListingQuery()
    )


@client_route(bp, "/publicRooms", methods=["POST"])
async def post_public_rooms() -> dict[str, object]:
    await require_auth(allow_guest=True)
    body = await json_body(allow_empty=True)
    server = _remote_server()
    since = since_token(body)
    limit = _limit(body.get("limit"))
    query = listing_query(body)
    s = services()
    if server is not None:
        flt = body.get("filter")
        instance = body.get("third_party_instance_id")
        return await s.remote_directory.list(
            server,
            RemoteListing(
                limit=limit,
                since=since,
                search_filter=flt if isinstance(flt, Mapping) and flt else None,
                include_all_networks=body.get("include_all_networks") is True,
                third_party_instance_id=instance if isinstance(instance, str) else None,
            ),
        )
    if query.network == ("", ""):
        return {"chunk": [], "total_room_count_estimate": 0}
    return await list_public_rooms(s.room_store, s.events, limit=limit, since=since, query=query)
