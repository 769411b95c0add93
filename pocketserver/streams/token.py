"""Sync tokens: a position in each stream, opaque to clients, valid across restarts.

A token only ever names positions that were committed when it was made, so a
client can never be told about something and then not find it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from pocketserver.errors import MatrixError

PREFIX = "p"


@dataclass(frozen=True, slots=True)
class SyncToken:
    """Positions in each stream. Streams not implemented yet stay 0."""

    events: int = 0
    account_data: int = 0
    receipts: int = 0
    typing: int = 0
    to_device: int = 0
    device_lists: int = 0
    presence: int = 0

    def encode(self) -> str:
        return PREFIX + "_".join(str(getattr(self, f.name)) for f in fields(self))

    @classmethod
    def parse(cls, text: str) -> SyncToken:
        """Parse a token given by a client.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` if it is not one of ours.
        """
        if not text.startswith(PREFIX):
            raise MatrixError(400, "M_INVALID_PARAM", "invalid since token")
        parts = text[len(PREFIX) :].split("_")
        names = [f.name for f in fields(cls)]
        if not 1 <= len(parts) <= len(names) or not all(p.isdigit() and len(p) < 19 for p in parts):
            raise MatrixError(400, "M_INVALID_PARAM", "invalid since token")
        return cls(**{name: int(value) for name, value in zip(names, parts, strict=False)})

    def with_events(self, position: int) -> SyncToken:
        return replace(self, events=position)
