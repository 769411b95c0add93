"""Answers of other servers kept for a short while (profiles, space hierarchies).

An :class:`AnswerCache` is an :class:`~pocketserver.cache.LruCache` from the memory
budget (so it is bounded by bytes) whose entries also expire after ``ttl_s``: a
remote answer is a snapshot of someone else's data, reused only briefly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from pocketserver.cache import LruCache, MemoryBudget, estimate_size

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class AnswerCache(Generic[K, V]):
    """A byte-bounded LRU whose entries expire ``ttl_s`` seconds after they were set."""

    def __init__(
        self,
        budget: MemoryBudget,
        name: str,
        share: float,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: LruCache[K, tuple[float, V]] = budget.cache(
            name, share, lambda entry: estimate_size(entry[1]) + 32
        )
        self.ttl_s = ttl_s
        self._clock = clock

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """``(True, value)`` for a fresh entry (the value may be None), else
        ``(False, None)``."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if self._clock() >= expires:
            self._entries.pop(key)
            return False, None
        return True, value

    def get(self, key: K) -> V | None:
        return self.lookup(key)[1]

    def set(self, key: K, value: V, ttl_s: float | None = None) -> None:
        """Keep ``value`` for ``ttl_s`` seconds (the cache's TTL by default)."""
        ttl = self.ttl_s if ttl_s is None else ttl_s
        self._entries.set(key, (self._clock() + ttl, value))

    def pop(self, key: K) -> None:
        self._entries.pop(key)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def lru(self) -> LruCache[K, tuple[float, V]]:
        """The underlying cache (its statistics and byte bound)."""
        return self._entries
