"""Our room directory as another server sees it (``/publicRooms`` over federation)."""

from __future__ import annotations

from dataclasses import replace

from pocketserver.errors import MatrixError
from pocketserver.federation.history import FederationHistory
from pocketserver.rooms.public_rooms import ListingQuery, list_public_rooms
from pocketserver.storage import public_rooms as listing_store


async def listing_for_server(
    history: FederationHistory,
    origin: str,
    *,
    limit: int | None,
    since: str | None,
    query: ListingQuery,
) -> dict[str, object]:
    """One page of our directory for ``origin``: without rooms created not to federate
    (``m.federate: false``) and rooms whose server ACL denies ``origin`` (as Synapse's
    listing ``from_federation_origin``)."""
    store = history.store
    denied = []
    for room_id in await store.db.read(listing_store.listed_rooms_with_acl):
        try:
            await history.check_acl(origin, room_id)
        except MatrixError:
            denied.append(room_id)
    query = replace(query, federatable_only=True, excluded=tuple(denied))
    return await list_public_rooms(store, history.reader, limit=limit, since=since, query=query)
