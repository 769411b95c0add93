"""bcrypt password hashes in Synapse's format (``$2b$<rounds>$...``).

Synapse hashes ``NFKC(password) + pepper`` as UTF-8 with bcrypt; older bcrypt
releases silently used only the first 72 bytes, newer ones refuse longer input.
We cut at 72 bytes ourselves so that hashes made by either (and by Synapse) keep
verifying.
"""

from __future__ import annotations

import unicodedata

import bcrypt

_BCRYPT_MAX = 72


def _prepare(password: str, pepper: str) -> bytes:
    # surrogatepass: a lone surrogate (possible in JSON) hashes instead of crashing.
    text = unicodedata.normalize("NFKC", password) + pepper
    return text.encode("utf-8", "surrogatepass")[:_BCRYPT_MAX]


def hash_password(password: str, *, pepper: str = "", rounds: int = 12) -> str:
    """Return the bcrypt hash of ``password`` (slow on purpose; run off the event loop)."""
    return bcrypt.hashpw(_prepare(password, pepper), bcrypt.gensalt(rounds)).decode("ascii")


def check_password(password: str, password_hash: str | None, *, pepper: str = "") -> bool:
    """True if ``password`` matches ``password_hash``; False for no or malformed hash."""
    if not password_hash:
        return False
    try:
        return bcrypt.checkpw(_prepare(password, pepper), password_hash.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
