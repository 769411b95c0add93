"""Filters given by clients, parsed by the pure core and refused as the spec says."""

from __future__ import annotations

from pocketserver.core.event_filter import EventFilter, FilterError, SyncFilter
from pocketserver.errors import bad_json


def parse_sync_filter(body: object) -> SyncFilter:
    """A whole filter (``POST /user/{userId}/filter``, /sync's ``filter``).

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` for a wrong shape.
    """
    try:
        return SyncFilter.parse(body)
    except FilterError as e:
        raise bad_json(str(e)) from None


def parse_event_filter(body: object, where: str) -> EventFilter:
    """A RoomEventFilter (``/messages``, ``/context``, ``/search``...).

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` for a wrong shape.
    """
    try:
        return EventFilter.parse(body, where)
    except FilterError as e:
        raise bad_json(str(e)) from None
