"""``POST /rooms/{roomId}/read_markers``: the fully read marker, and read receipts.

Spec: client-server-api modules/read_markers.md and data/api/client-server/
read_markers.yaml. The fully read marker is the room account data ``m.fully_read``
(``{"event_id": ...}``); it only moves forward, as in Synapse, so a client on a
device that is behind cannot pull it back. ``m.read`` / ``m.read.private`` are
handed to the receipt service, exactly like ``/receipt/{type}/{eventId}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Protocol

from pocketserver.account_data.service import AccountDataService
from pocketserver.errors import not_found
from pocketserver.rooms.client import RoomClient

RECEIPT_TYPES = ("m.read", "m.read.private")


class ReceiptSetter(Protocol):
    def set_receipt(
        self,
        user_id: str,
        room_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: str | None = None,
    ) -> Awaitable[object]: ...


async def set_read_markers(
    account_data: AccountDataService,
    rooms: RoomClient,
    receipts: ReceiptSetter | None,
    user_id: str,
    room_id: str,
    fully_read: str | None,
    read: Mapping[str, str],
) -> None:
    """Move the user's fully read marker and/or read receipts in a joined room.

    Args:
        read: Receipt type (``m.read``, ``m.read.private``) -> event ID. Ignored when
            ``receipts`` is None (no receipt service in this build).

    Raises:
        MatrixError: 403 ``M_FORBIDDEN`` if the user is not joined; 404 ``M_NOT_FOUND``
            if an event is not in the room or not visible to the user. Nothing is
            changed then.
    """
    await rooms.require_joined(user_id, room_id)
    wanted = {eid for eid in (fully_read, *read.values()) if eid is not None}
    if not wanted:
        return
    visible = await rooms.visible_events(user_id, room_id, sorted(wanted))
    for event_id in sorted(wanted):
        if event_id not in visible:
            raise not_found(f"no event {event_id} in this room")
    if receipts is not None:
        for receipt_type, event_id in read.items():
            await receipts.set_receipt(user_id, room_id, receipt_type, event_id, None)
    if fully_read is not None and await _moves_forward(
        account_data, rooms, user_id, room_id, visible[fully_read].stream_ordering, fully_read
    ):
        await account_data.set_fully_read(user_id, room_id, fully_read)


async def _moves_forward(
    account_data: AccountDataService,
    rooms: RoomClient,
    user_id: str,
    room_id: str,
    new_ordering: int,
    new_id: str,
) -> bool:
    old_id = await account_data.fully_read(user_id, room_id)
    if old_id is None:
        return True
    if old_id == new_id:
        return False
    old = await rooms.store.get_event(old_id)
    return old is None or old.room_id != room_id or new_ordering > old.stream_ordering
