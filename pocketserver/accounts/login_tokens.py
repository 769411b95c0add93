"""One-time login tokens (client-server API "Login", ``m.login.token``, and
``POST /login/get_token``, added in v1.7).

A logged-in client asks for a token (after confirming the user's password: the spec
says servers MUST re-prompt every time) and hands it to a new client, which logs in
with ``{"type": "m.login.token", "token": ...}``. Each token is good for one login
and for ``lifetime_ms``.

Tokens live in memory only, at most :data:`MAX_TOKENS` of them (past that the oldest
is dropped): one that a restart forgets just makes the user ask again. Only the
SHA-256 of a token is kept, so a memory dump does not hand out logins.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass

import trio

from pocketserver.config.model import RateLimit
from pocketserver.errors import MatrixError
from pocketserver.ratelimit import RateLimiter

MAX_TOKENS = 1_000
ISSUE_LIMIT = RateLimit(per_second=1 / 60, burst_count=1)
"""The spec suggests at most one token a minute per user."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in_ms: int


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class LoginTokens:
    """Issue and redeem single-use, time-limited login tokens."""

    def __init__(self, lifetime_ms: int, *, max_tokens: int = MAX_TOKENS) -> None:
        self.lifetime_ms = lifetime_ms
        self._max_tokens = max_tokens
        self._tokens: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._issue_limit = RateLimiter(ISSUE_LIMIT)

    def check_rate(self, user_id: str) -> None:
        """Raise 429 if the user may not have another token yet (checked before UIA
        finishes, so a refused request does not use up the password prompt).

        Raises:
            MatrixError: 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``.
        """
        now = trio.current_time()
        if not self._issue_limit.would_allow(user_id, now):
            self._issue_limit.check(user_id, now)

    def issue(self, user_id: str) -> IssuedToken:
        """A new token for ``user_id``; counts against the user's rate limit."""
        now = trio.current_time()
        self._issue_limit.check(user_id, now)
        self._expire(now)
        token = "plt_" + secrets.token_urlsafe(32)
        self._tokens[_digest(token)] = (user_id, now + self.lifetime_ms / 1000)
        while len(self._tokens) > self._max_tokens:
            self._tokens.popitem(last=False)
        return IssuedToken(token, self.lifetime_ms)

    def redeem(self, token: str) -> str:
        """The user the token logs in as; the token is used up.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` for an unknown, used or expired token.
        """
        now = trio.current_time()
        self._expire(now)
        entry = self._tokens.pop(_digest(token), None)
        if entry is None or entry[1] <= now:
            raise MatrixError(403, "M_FORBIDDEN", "invalid or expired login token")
        return entry[0]

    def _expire(self, now: float) -> None:
        # Insertion order is expiry order: every token has the same lifetime.
        while self._tokens:
            key, (_, expires_at) = next(iter(self._tokens.items()))
            if expires_at > now:
                break
            del self._tokens[key]

    def __len__(self) -> int:
        return len(self._tokens)
