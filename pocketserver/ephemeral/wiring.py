"""Building the typing, receipt and presence services and plugging them into /sync."""

from __future__ import annotations

from pocketserver.config.model import Config
from pocketserver.ephemeral.presence import PresenceService
from pocketserver.ephemeral.receipts import ReadMarkers, ReceiptService
from pocketserver.ephemeral.typing_notices import TypingService
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.writer import PersistedEvent
from pocketserver.storage import receipts as receipt_store
from pocketserver.streams.notifier import Notifier
from pocketserver.sync.handler import SyncHandler


async def build_ephemeral(
    config: Config,
    rooms: RoomClient,
    notifier: Notifier,
    sync: SyncHandler,
    read_markers: ReadMarkers | None,
) -> tuple[TypingService, ReceiptService, PresenceService]:
    """The three services, registered as /sync sources; sending events, typing and
    receipts count as presence activity. Start ``typing.run`` and ``presence.run``
    in the server's background nursery."""
    db = rooms.store.db
    presence = PresenceService(db, notifier, enabled=config.presence_enabled)
    typing = TypingService(rooms.require_joined, notifier, activity=presence.bump_active)
    receipts = ReceiptService(
        rooms,
        notifier,
        await db.read(receipt_store.stream_position),
        activity=presence.bump_active,
        read_markers=read_markers,
    )
    suffix = ":" + config.server_name

    def event_sent(event: PersistedEvent) -> None:
        sender = event.pdu.get("sender")
        if event.accepted and isinstance(sender, str) and sender.endswith(suffix):
            presence.bump_active(sender)

    def member_event(event: PersistedEvent) -> None:
        pdu = event.pdu
        if event.accepted and not event.outlier and pdu.get("type") == "m.room.member":
            content, target = pdu.get("content"), pdu.get("state_key")
            if isinstance(content, dict) and isinstance(target, str):
                typing.membership_changed(target, event.room_id, content.get("membership"))

    rooms.writer.add_listener(member_event)
    if presence.enabled:
        rooms.writer.add_listener(event_sent)
    for source in (typing, receipts, presence):
        sync.add_source(source)
    return typing, receipts, presence
