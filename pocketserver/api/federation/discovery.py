"""Finding rooms from another server: ``/publicRooms`` (server-server
public_rooms.yaml) and ``/hierarchy/{roomId}`` (space_hierarchy.yaml)."""

from __future__ import annotations

from quart import Blueprint, request

from pocketserver.api.federation.auth import federation_origin
from pocketserver.api.http import json_body, services
from pocketserver.api.public_rooms import listing_query, since_token
from pocketserver.errors import bad_json, forbidden, invalid_param
from pocketserver.federation.serving_directory import listing_for_server
from pocketserver.rooms.public_rooms import ListingQuery

bp = Blueprint("federation_discovery", __name__)


def _require_directory_over_federation() -> None:
    """``allow_public_rooms_over_federation`` (default false): otherwise 403
    ``M_FORBIDDEN``, as Synapse's ``FederationDeniedError``."""
    if not services().config.allow_public_rooms_over_federation:
        raise forbidden(f"Federation denied with {federation_origin()}.")


def _limit(raw: object) -> int | None:
    """0 or absent: no limit asked for (the listing's default), as Synapse."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = int(raw)
        except ValueError:
            raise invalid_param("limit must be an integer") from None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise bad_json("limit must be an integer")
    if raw < 0:
        raise invalid_param("limit may not be negative")
    return raw or None


async def _listing(limit: int | None, since: str | None, query: ListingQuery) -> dict[str, object]:
    return await listing_for_server(
        services().federation_history, federation_origin(), limit=limit, since=since, query=query
    )


def _flag(name: str) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise invalid_param(f"{name} must be 'true' or 'false'")


@bp.get("/_matrix/federation/v1/publicRooms")
async def get_public_rooms() -> dict[str, object]:
    _require_directory_over_federation()
    body: dict[str, object] = {"include_all_networks": _flag("include_all_networks")}
    instance = request.args.get("third_party_instance_id")
    if instance:
        body["third_party_instance_id"] = instance
    return await _listing(
        _limit(request.args.get("limit")), request.args.get("since") or None, listing_query(body)
    )


@bp.post("/_matrix/federation/v1/publicRooms")
async def post_public_rooms() -> dict[str, object]:
    _require_directory_over_federation()
    body = await json_body(allow_empty=True)
    query = listing_query(body)
    if query.network == ("", ""):
        return {"chunk": [], "total_room_count_estimate": 0}
    return await _listing(_limit(body.get("limit")), since_token(body), query)


@bp.get("/_matrix/federation/v1/hierarchy/<room_id>")
async def hierarchy(room_id: str) -> dict[str, object]:
    """One level of a space for another server (space_hierarchy.yaml); 404 for a room
    we do not hold or that server may not see."""
    return await services().space_hierarchy.for_server(
        federation_origin(), room_id, _flag("suggested_only")
    )
