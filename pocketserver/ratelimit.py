"""Token-bucket rate limits from the config's ``rc_*`` sections.

Buckets are keyed (e.g. by client address or user ID) and kept in a bounded
ordered dict: past ``max_keys`` the least recently used bucket is dropped, which
at worst forgets a client's debt, never lets memory grow.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable

from pocketserver.config.model import RateLimit
from pocketserver.errors import MatrixError

DEFAULT_MAX_KEYS = 10_000


class RateLimiter:
    """One limit (``per_second`` sustained, ``burst_count`` at once) over many keys."""

    def __init__(
        self,
        limit: RateLimit,
        max_keys: int = DEFAULT_MAX_KEYS,
        *,
        exempt: Callable[[Hashable], bool] | None = None,
    ) -> None:
        self.limit = limit
        self._max_keys = max_keys
        # key -> (tokens available, time they were counted)
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()
        self.exempt = exempt
        """Keys never limited (users of application services with ``rate_limited:
        false``), for the limiters keyed by user ID."""

    def _available(self, key: Hashable, now: float) -> float:
        tokens, then = self._buckets.get(key, (float(self.limit.burst_count), now))
        return min(float(self.limit.burst_count), tokens + (now - then) * self.limit.per_second)

    def check(self, key: Hashable, now: float, *, cost: float = 1.0) -> None:
        """Take ``cost`` from ``key``'s bucket, or raise without taking anything.

        Raises:
            MatrixError: 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``.
        """
        if self.exempt is not None and self.exempt(key):
            return
        tokens = self._available(key, now)
        if tokens < cost:
            wait_s = (cost - tokens) / self.limit.per_second
            raise MatrixError(
                429,
                "M_LIMIT_EXCEEDED",
                "too many requests",
                retry_after_ms=math.ceil(wait_s * 1000),
            )
        self._store(key, tokens - cost, now)

    def would_allow(self, key: Hashable, now: float) -> bool:
        if self.exempt is not None and self.exempt(key):
            return True
        return self._available(key, now) >= 1.0

    def record(self, key: Hashable, now: float) -> None:
        """Take one token without checking (e.g. count a failed login)."""
        self._store(key, self._available(key, now) - 1.0, now)

    def _store(self, key: Hashable, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def take_all(now: float, *wanted: tuple[RateLimiter, Hashable]) -> None:
    """Take one token from each ``(limiter, key)``, or none at all if one is empty.

    Raises:
        MatrixError: 429 ``M_LIMIT_EXCEEDED`` of the first empty bucket.
    """
    for limiter, key in wanted:
        if not limiter.would_allow(key, now):
            limiter.check(key, now)
    for limiter, key in wanted:
        limiter.record(key, now)
