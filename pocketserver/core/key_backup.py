"""Which of two backed-up keys for one megolm session a server keeps.

Spec: client-server-api modules/end_to_end_encryption.md "Server-side key backups":
when a client uploads a key for a session the server already has a key for, the
server keeps the key with ``is_verified`` true if the two differ; otherwise the one
with the lower ``first_message_index``; and if those are equal too, the one with the
lower ``forwarded_count``. A key that is no better than the stored one (all three
equal) does not replace it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyQuality:
    """The metadata of a backed-up key that decides which key is kept."""

    is_verified: bool
    first_message_index: int
    forwarded_count: int


def should_replace(existing: KeyQuality | None, new: KeyQuality) -> bool:
    """Whether ``new`` replaces ``existing`` (None: no key stored yet) in a backup.

    Args:
        existing: The stored key's metadata, or None.
        new: The uploaded key's metadata.

    Returns:
        True if the uploaded key is to be stored.
    """
    if existing is None:
        return True
    if existing.is_verified != new.is_verified:
        return new.is_verified
    if existing.first_message_index != new.first_message_index:
        return new.first_message_index < existing.first_message_index
    return new.forwarded_count < existing.forwarded_count
