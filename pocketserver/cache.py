"""Byte-bounded LRU caches that share the config's one ``memory_budget``.

Every cache in pocketserver is an :class:`LruCache` handed out by the
:class:`MemoryBudget`; nothing keeps an unbounded dict. Sizes are estimates
(:func:`estimate_size`), deliberately on the generous side, so that the real
memory use stays under the budget.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_ENTRY_OVERHEAD = 120  # OrderedDict node, key reference, bookkeeping


def estimate_size(obj: object, _depth: int = 0) -> int:
    """A generous estimate of the bytes ``obj`` keeps alive (containers walked, bounded depth)."""
    size = sys.getsizeof(obj)
    if _depth > 8:
        return size
    if isinstance(obj, dict):
        for k, v in obj.items():
            size += estimate_size(k, _depth + 1) + estimate_size(v, _depth + 1)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            size += estimate_size(item, _depth + 1)
    elif hasattr(obj, "__slots__") and not isinstance(obj, type):
        for name in getattr(obj, "__slots__", ()):
            size += estimate_size(getattr(obj, name, None), _depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        size += estimate_size(vars(obj), _depth + 1)
    return size


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    name: str
    entries: int
    size_bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


class LruCache(Generic[K, V]):
    """A least-recently-used cache bounded by the estimated bytes of its entries."""

    def __init__(
        self, name: str, max_bytes: int, sizer: Callable[[V], int] = estimate_size
    ) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self._sizer = sizer
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._size = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get(self, key: K, default: V | None = None) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            self._misses += 1
            return default
        self._data.move_to_end(key)
        self._hits += 1
        return entry[0]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def set(self, key: K, value: V, value_size: int | None = None) -> None:
        """Store ``value``; evict the least recently used entries to stay in bounds.

        ``value_size``, when the caller knows it, replaces the sizer's estimate.
        A value larger than the whole cache is not stored.
        """
        if value_size is None:
            value_size = self._sizer(value)
        size = value_size + estimate_size(key) + _ENTRY_OVERHEAD
        self.pop(key)
        if size > self.max_bytes:
            return
        self._data[key] = (value, size)
        self._size += size
        while self._size > self.max_bytes:
            _, (_, old_size) = self._data.popitem(last=False)
            self._size -= old_size
            self._evictions += 1

    def pop(self, key: K) -> V | None:
        entry = self._data.pop(key, None)
        if entry is None:
            return None
        self._size -= entry[1]
        return entry[0]

    def invalidate_where(self, predicate: Callable[[K], bool]) -> int:
        """Drop every entry whose key matches; return how many were dropped."""
        doomed = [k for k in self._data if predicate(k)]
        for k in doomed:
            self.pop(k)
        return len(doomed)

    def clear(self) -> None:
        self._data.clear()
        self._size = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(
            name=self.name,
            entries=len(self._data),
            size_bytes=self._size,
            max_bytes=self.max_bytes,
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
        )


class MemoryBudget:
    """The config's ``memory_budget``, split into named shares.

    ``sqlite`` gets a fixed share, the bound for SQLite's page caches (see
    ``storage.db.cache_sizes_kib``: they use much less); the named caches divide the
    rest by weight. Asking for more than the budget holds raises, so a
    mistake in the split shows up at start, not as a swapping Raspberry Pi.
    """

    SQLITE_SHARE = 0.25

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.sqlite_bytes = int(total_bytes * self.SQLITE_SHARE)
        self._cache_bytes = total_bytes - self.sqlite_bytes
        self._allocated = 0
        self._caches: dict[str, LruCache[object, object]] = {}

    def cache(
        self, name: str, fraction: float, sizer: Callable[[V], int] = estimate_size
    ) -> LruCache[K, V]:
        """Create the cache ``name`` with ``fraction`` of the cache share of the budget.

        Raises:
            ValueError: the name is taken or the fractions would add up past 1.
        """
        if name in self._caches:
            raise ValueError(f"cache {name!r} exists already")
        if not 0 < fraction <= 1:
            raise ValueError(f"cache {name!r}: a share of the memory budget must be in (0, 1]")
        size = int(self._cache_bytes * fraction)
        if self._allocated + size > self._cache_bytes:
            raise ValueError(f"cache {name!r} does not fit in the memory budget")
        self._allocated += size
        cache: LruCache[K, V] = LruCache(name, size, sizer)
        self._caches[name] = cache  # type: ignore[assignment]
        return cache

    @property
    def unallocated_bytes(self) -> int:
        return self._cache_bytes - self._allocated

    def statistics(self) -> list[CacheStatistics]:
        return [c.statistics() for c in self._caches.values()]
