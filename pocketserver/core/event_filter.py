"""Event filters (client-server API "Filtering"; data/api/client-server/definitions/
event_filter.yaml, room_event_filter.yaml, sync_filter.yaml).

Pure: parsing validates shapes and raises :class:`FilterError` (which the routes answer
as 400 ``M_BAD_JSON``); matching takes event dicts. ``types`` and ``senders`` patterns
accept ``*`` wildcards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from pocketserver.core.identifiers import is_valid_room_id, is_valid_user_id


class FilterError(ValueError):
    """A filter of the wrong shape (the client-server API answers 400 ``M_BAD_JSON``)."""


DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 1000


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    """Only ``*`` is a wildcard in filters (any sequence of characters)."""
    return re.compile(
        "".join(".*" if c == "*" else re.escape(c) for c in pattern) + r"\Z", re.DOTALL
    )


def _strings(body: Mapping[str, object], key: str, where: str) -> tuple[str, ...] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FilterError(f"{where}.{key} must be a list of strings")
    return tuple(value)


def _room_ids(body: Mapping[str, object], key: str, where: str) -> tuple[str, ...] | None:
    """A list of room IDs: anything else is 400 ``M_BAD_JSON`` (as Synapse's filter
    schema, whose ``rooms`` items have the ``matrix_room_id`` format)."""
    ids = _strings(body, key, where)
    if ids is not None and not all(is_valid_room_id(r) for r in ids):
        raise FilterError(f"{where}.{key} must be a list of room IDs")
    return ids


def _user_ids(body: Mapping[str, object], key: str, where: str) -> tuple[str, ...] | None:
    """A list of user IDs (``senders``: no wildcards), as :func:`_room_ids`."""
    ids = _strings(body, key, where)
    if ids is not None and not all(is_valid_user_id(u) for u in ids):
        raise FilterError(f"{where}.{key} must be a list of user IDs")
    return ids


@dataclass(frozen=True, slots=True)
class EventFilter:
    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def matches(self, event: Mapping[str, object]) -> bool:
        etype = str(event.get("type", ""))
        sender = str(event.get("sender", ""))
        if any(_glob(p).match(etype) for p in self.not_types):
            return False
        if self.types is not None and not any(_glob(p).match(etype) for p in self.types):
            return False
        if sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        room_id = event.get("room_id")
        if isinstance(room_id, str) and not self.allows_room(room_id):
            return False
        if self.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, Mapping) and "url" in content
            if has_url != self.contains_url:
                return False
        return True

    @classmethod
    def parse(cls, body: object, where: str) -> EventFilter:
        if body is None:
            return cls()
        if not isinstance(body, Mapping):
            raise FilterError(f"{where} must be an object")
        limit = body.get("limit")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise FilterError(f"{where}.limit must be a non-negative integer")
        contains_url = body.get("contains_url")
        if contains_url is not None and not isinstance(contains_url, bool):
            raise FilterError(f"{where}.contains_url must be a boolean")
        flags = {}
        for key in (
            "lazy_load_members",
            "include_redundant_members",
            "unread_thread_notifications",
        ):
            value = body.get(key, False)
            if not isinstance(value, bool):
                raise FilterError(f"{where}.{key} must be a boolean")
            flags[key] = value
        return cls(
            limit=None if limit is None else min(limit, MAX_TIMELINE_LIMIT),
            types=_strings(body, "types", where),
            not_types=_strings(body, "not_types", where) or (),
            senders=_user_ids(body, "senders", where),
            not_senders=_user_ids(body, "not_senders", where) or (),
            rooms=_room_ids(body, "rooms", where),
            not_rooms=_room_ids(body, "not_rooms", where) or (),
            contains_url=contains_url,
            **flags,
        )


@dataclass(frozen=True, slots=True)
class SyncFilter:
    """A whole filter as used by /sync."""

    timeline: EventFilter = field(default_factory=EventFilter)
    state: EventFilter = field(default_factory=EventFilter)
    ephemeral: EventFilter = field(default_factory=EventFilter)
    room_account_data: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    presence: EventFilter = field(default_factory=EventFilter)
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    include_leave: bool = False
    event_fields: tuple[str, ...] | None = None
    event_format: str = "client"
    """``federation``: room events in /sync as the server has them (sync_filter.yaml)."""

    @property
    def timeline_limit(self) -> int:
        return DEFAULT_TIMELINE_LIMIT if self.timeline.limit is None else self.timeline.limit

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    @classmethod
    def parse(cls, body: object) -> SyncFilter:
        """Validate a filter definition (the body of ``POST /user/{userId}/filter``).

        Raises:
            FilterError: for a wrong shape.
        """
        if not isinstance(body, Mapping):
            raise FilterError("filter must be an object")
        room = body.get("room") or {}
        if not isinstance(room, Mapping):
            raise FilterError("filter.room must be an object")
        include_leave = room.get("include_leave", False)
        if not isinstance(include_leave, bool):
            raise FilterError("room.include_leave must be a boolean")
        event_format = body.get("event_format", "client")
        if event_format not in ("client", "federation"):
            raise FilterError("event_format must be 'client' or 'federation'")
        return cls(
            timeline=EventFilter.parse(room.get("timeline"), "room.timeline"),
            state=EventFilter.parse(room.get("state"), "room.state"),
            ephemeral=EventFilter.parse(room.get("ephemeral"), "room.ephemeral"),
            room_account_data=EventFilter.parse(room.get("account_data"), "room.account_data"),
            account_data=EventFilter.parse(body.get("account_data"), "account_data"),
            presence=EventFilter.parse(body.get("presence"), "presence"),
            rooms=_room_ids(room, "rooms", "room"),
            not_rooms=_room_ids(room, "not_rooms", "room") or (),
            include_leave=include_leave,
            event_fields=_strings(body, "event_fields", "filter"),
            event_format=str(event_format),
        )
