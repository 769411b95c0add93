"""Relations a client may not send: checked in the send path (``RoomClient.send``).

Spec: modules/threading.md "Validation of m.thread relationships",
modules/event_annotations.md "Avoiding duplicate annotations".
"""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.errors import MatrixError
from pocketserver.rooms.store import RoomStore
from pocketserver.storage import relations as relation_store


async def check_new_relation(
    store: RoomStore,
    room_id: str,
    sender: str,
    event_type: str,
    content: Mapping[str, object],
) -> None:
    """Refuse relations a client must not send (checked by :meth:`RoomClient.send`
    before the event is built; a retried transaction ID is not checked again, it
    returns the event it sent).

    - A thread cannot start from an event that has a relation itself (threading.md
      "Validation of m.thread relationships": 400 ``M_UNKNOWN``).
    - A second annotation by the same user with the same type and key
      (event_annotations.md "Avoiding duplicate annotations": 400
      ``M_DUPLICATE_ANNOTATION``).

    Raises:
        MatrixError: as above.
    """
    rel = relation_store.relation_of({"content": content})
    if rel is None or rel.rel_type not in ("m.thread", "m.annotation"):
        return
    if rel.rel_type == "m.thread":
        parent = await store.get_event(rel.relates_to_id)
        if (
            parent is not None
            and parent.room_id == room_id
            and relation_store.relation_of(parent.pdu) is not None
        ):
            raise MatrixError(
                400, "M_UNKNOWN", "cannot start a thread from an event with a relation"
            )
    elif rel.rel_type == "m.annotation":
        relates_to = content.get("m.relates_to")
        key = relates_to.get("key") if isinstance(relates_to, Mapping) else None
        if isinstance(key, str) and await store.db.read(
            relation_store.has_annotation, rel.relates_to_id, sender, event_type, key
        ):
            raise MatrixError(
                400, "M_DUPLICATE_ANNOTATION", "you already sent this annotation for this event"
            )
