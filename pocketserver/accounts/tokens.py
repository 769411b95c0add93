"""Access tokens and device IDs: random, and stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
import string

TOKEN_PREFIX = "pkt_"
_DEVICE_ALPHABET = string.ascii_uppercase


def new_access_token() -> str:
    """A fresh unguessable access token (256 bits of randomness)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """What the database keeps of a token: its SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_device_id() -> str:
    """A device ID in the style clients expect (ten capital letters)."""
    return "".join(secrets.choice(_DEVICE_ALPHABET) for _ in range(10))
