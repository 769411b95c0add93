"""Synapse-compatible shared-secret registration (``/_synapse/admin/v1/register``).

The client fetches a nonce, then sends the HMAC-SHA1 (keyed with
``registration_shared_secret``) of ``nonce NUL user NUL password NUL admin|notadmin``
with an optional ``NUL user_type``, exactly as Synapse's register_new_matrix_user
computes it. Nonces are single-use, expire after a minute and are bounded in number.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict

NONCE_LIFETIME_S = 60.0
MAX_NONCES = 1000


def registration_mac(
    shared_secret: str,
    nonce: str,
    user: str,
    password: str,
    admin: bool,
    user_type: str | None = None,
) -> str:
    """The hex HMAC-SHA1 that Synapse's shared-secret registration expects."""
    mac = hmac.new(shared_secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(user.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(password.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    if user_type:
        mac.update(b"\x00")
        mac.update(user_type.encode("utf-8"))
    return mac.hexdigest()


def mac_matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace"))


class NonceStore:
    """Single-use nonces with an expiry; at most ``MAX_NONCES`` live at once."""

    def __init__(self, max_nonces: int = MAX_NONCES, lifetime_s: float = NONCE_LIFETIME_S) -> None:
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._max = max_nonces
        self._lifetime = lifetime_s

    def issue(self, now: float) -> str:
        self._expire(now)
        while len(self._nonces) >= self._max:
            self._nonces.popitem(last=False)
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = now + self._lifetime
        return nonce

    def consume(self, nonce: str, now: float) -> bool:
        """Use up ``nonce``; True if it was issued and has not expired."""
        self._expire(now)
        return self._nonces.pop(nonce, None) is not None

    def _expire(self, now: float) -> None:
        while self._nonces:
            nonce, expiry = next(iter(self._nonces.items()))
            if expiry > now:
                break
            del self._nonces[nonce]

    def __len__(self) -> int:
        return len(self._nonces)
