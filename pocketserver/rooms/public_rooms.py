"""The published room directory as ``/publicRooms`` lists it
(data/api/client-server/list_public_rooms.yaml): largest rooms first, keyset
tokens, an optional search term over name, topic, canonical alias and room ID.
"""

from __future__ import annotations

import base64
import binascii

from pocketserver.errors import MatrixError
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.summary import public_chunk, room_info
from pocketserver.storage import public_rooms as listing
from pocketserver.storage.public_rooms import ListingQuery, Position

__all__ = ["ListingQuery", "decode_token", "encode_token", "list_public_rooms"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


def encode_token(direction: str, pos: Position) -> str:
    raw = f"{direction}|{pos.joined}|{pos.room_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[str, Position]:
    """Raises: MatrixError 400 ``M_INVALID_PARAM`` for a token this server didn't make."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        direction, joined, room_id = raw.split("|", 2)
        if direction not in ("n", "p") or not room_id.startswith("!"):
            raise ValueError(raw)
        return direction, Position(int(joined), room_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise MatrixError(400, "M_INVALID_PARAM", "invalid pagination token") from None


async def list_public_rooms(
    store: RoomStore,
    reader: EventReader,
    *,
    limit: int | None,
    since: str | None,
    query: ListingQuery,
) -> dict[str, object]:
    """One page of the directory (the PublicRoomsResponse)."""
    size = DEFAULT_LIMIT if not limit else min(limit, MAX_LIMIT)
    after = before = None
    if since:
        direction, pos = decode_token(since)
        after, before = (pos, None) if direction == "n" else (None, pos)
    found = await store.db.read(listing.list_page, query, after, before, size)
    more = len(found) > size
    if before is not None:
        page = found[1:] if more else found
        has_prev, has_next = more, True
    else:
        page = found[:size]
        has_prev, has_next = after is not None, more
    chunk = []
    for pos in page:
        info = await room_info(store, reader, pos.room_id)
        if info is not None:
            chunk.append(public_chunk(info))
    body: dict[str, object] = {
        "chunk": chunk,
        "total_room_count_estimate": await store.db.read(listing.count_published),
    }
    if page and has_next:
        body["next_batch"] = encode_token("n", page[-1])
    if page and has_prev:
        body["prev_batch"] = encode_token("p", page[0])
    return body
