"""Byte-bounded LRU caches and the memory budget that hands them out."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pocketserver.cache import LruCache, MemoryBudget, estimate_size


def by_value(value: int) -> int:
    """A sizer for tests: the value is its own size in bytes."""
    return value


def entry_cost(cache: LruCache[str, int], key: str, value: int) -> int:
    """What one entry of ``value`` bytes costs in ``cache`` (measured, not assumed)."""
    probe: LruCache[str, int] = LruCache("probe", 10**9, by_value)
    probe.set(key, value)
    return probe.size_bytes


# --- LruCache --------------------------------------------------------------------------


def test_set_with_a_known_size_skips_the_sizer() -> None:
    cache: LruCache[str, int] = LruCache("c", 10_000, by_value)
    cache.set("a", 5)
    plain = cache.size_bytes
    cache.set("a", 5, value_size=1005)
    assert cache.size_bytes == plain + 1000
    cache.set("b", 7, value_size=20_000)  # larger than the whole cache: not stored
    assert "b" not in cache
    assert cache.size_bytes == plain + 1000


def test_get_and_set() -> None:
    cache: LruCache[str, str] = LruCache("c", 10_000)
    assert cache.get("a") is None
    assert cache.get("a", "default") == "default"
    cache.set("a", "one")
    assert cache.get("a") == "one"
    assert "a" in cache
    assert len(cache) == 1
    cache.set("a", "two")
    assert cache.get("a") == "two"
    assert len(cache) == 1


def test_falsy_values_are_hits() -> None:
    cache: LruCache[str, object] = LruCache("c", 10_000)
    cache.set("zero", 0)
    cache.set("empty", "")
    assert cache.get("zero", "miss") == 0
    assert cache.get("empty", "miss") == ""
    assert cache.statistics().hits == 2


def test_evicts_least_recently_used() -> None:
    cache: LruCache[str, int] = LruCache("c", 0, by_value)
    cost = entry_cost(cache, "a", 100)
    cache.max_bytes = 3 * cost
    for key in ("a", "b", "c"):
        cache.set(key, 100)
    cache.set("d", 100)
    assert "a" not in cache
    assert all(k in cache for k in ("b", "c", "d"))
    assert cache.statistics().evictions == 1


def test_get_refreshes_recency() -> None:
    cache: LruCache[str, int] = LruCache("c", 0, by_value)
    cache.max_bytes = 3 * entry_cost(cache, "a", 100)
    for key in ("a", "b", "c"):
        cache.set(key, 100)
    assert cache.get("a") == 100  # now "b" is the oldest
    cache.set("d", 100)
    assert "a" in cache
    assert "b" not in cache


def test_set_of_existing_key_refreshes_and_resizes() -> None:
    cache: LruCache[str, int] = LruCache("c", 0, by_value)
    cache.max_bytes = 3 * entry_cost(cache, "a", 100)
    for key in ("a", "b", "c"):
        cache.set(key, 100)
    cache.set("a", 100)  # refreshed: "b" is the oldest now
    cache.set("d", 100)
    assert "a" in cache
    assert "b" not in cache
    size = cache.size_bytes
    cache.set("a", 50)
    assert cache.size_bytes == size - 50


def test_a_large_value_evicts_several() -> None:
    cache: LruCache[str, int] = LruCache("c", 0, by_value)
    cache.max_bytes = 4 * entry_cost(cache, "a", 100)
    for key in ("a", "b", "c", "d"):
        cache.set(key, 100)
    cache.set("big", 250)
    assert "big" in cache
    assert cache.size_bytes <= cache.max_bytes
    assert "a" not in cache
    assert "b" not in cache
    assert "d" in cache
    assert cache.statistics().evictions == 2


def test_oversize_value_is_not_stored() -> None:
    cache: LruCache[str, int] = LruCache("c", 1000, by_value)
    cache.set("small", 10)
    cache.set("huge", 5000)
    assert "huge" not in cache
    assert cache.get("small") == 10
    assert cache.size_bytes <= 1000
    # Replacing a cached value with one too large drops the stale one.
    cache.set("small", 5000)
    assert "small" not in cache
    assert cache.size_bytes == 0


def test_statistics_count_hits_misses_evictions() -> None:
    cache: LruCache[str, int] = LruCache("things", 0, by_value)
    cache.max_bytes = 2 * entry_cost(cache, "a", 10)
    cache.set("a", 10)
    cache.set("b", 10)
    cache.get("a")
    cache.get("a")
    cache.get("zzz")
    cache.set("c", 10)  # evicts "b"
    cache.get("b")
    stats = cache.statistics()
    assert stats.name == "things"
    assert stats.hits == 2
    assert stats.misses == 2
    assert stats.evictions == 1
    assert stats.entries == 2
    assert stats.size_bytes == cache.size_bytes
    assert stats.max_bytes == cache.max_bytes


def test_pop_invalidate_where_and_clear() -> None:
    cache: LruCache[tuple[str, int], str] = LruCache("c", 100_000)
    for i in range(5):
        cache.set(("room", i), "x")
        cache.set(("user", i), "y")
    assert cache.pop(("room", 0)) == "x"
    assert cache.pop(("room", 0)) is None
    assert cache.invalidate_where(lambda k: k[0] == "user") == 5
    assert len(cache) == 4
    assert all(("room", i) in cache for i in range(1, 5))
    assert not any(("user", i) in cache for i in range(5))
    cache.clear()
    assert len(cache) == 0
    assert cache.size_bytes == 0


def test_estimate_size_grows_with_content() -> None:
    small = estimate_size({"a": "b"})
    big = estimate_size({"a": "b" * 10_000})
    assert big - small >= 9_999
    nested = estimate_size({"content": {"body": "x" * 5000, "list": ["y" * 5000]}})
    assert nested >= 10_000


class LruModel(RuleBasedStateMachine):
    """The cache against a plain list model: bounded, evicting from the old end only."""

    def __init__(self) -> None:
        super().__init__()
        self.max_bytes = 800
        self.cache: LruCache[int, int] = LruCache("model", self.max_bytes, by_value)
        self.order: list[int] = []  # keys present, oldest first
        self.hits = self.misses = self.evictions = 0

    @rule(key=st.integers(0, 12), value=st.integers(0, 900))
    def set(self, key: int, value: int) -> None:
        self.cache.set(key, value)
        expected = [k for k in self.order if k != key]
        if key in self.cache:
            assert entry_cost(self.cache, key, value) <= self.max_bytes
            expected.append(key)
            assert self.cache.get(key) == value
            self.hits += 1
            # Only the oldest entries may have been evicted to make room.
            present = [k for k in expected if k in self.cache]
            dropped = len(expected) - len(present)
            assert present == expected[dropped:]
            self.evictions += dropped
            self.order = present
        else:
            # Too large for the whole cache: nothing else changes.
            assert entry_cost(self.cache, key, value) > self.max_bytes
            assert [k for k in expected if k in self.cache] == expected
            self.order = expected

    @rule(key=st.integers(0, 12))
    def get(self, key: int) -> None:
        got = self.cache.get(key)
        if key in self.order:
            assert got is not None
            self.hits += 1
            self.order.remove(key)
            self.order.append(key)
        else:
            assert got is None
            self.misses += 1

    @rule(key=st.integers(0, 12))
    def pop(self, key: int) -> None:
        self.cache.pop(key)
        if key in self.order:
            self.order.remove(key)

    @invariant()
    def bounded_and_consistent(self) -> None:
        stats = self.cache.statistics()
        assert 0 <= self.cache.size_bytes <= self.max_bytes
        assert stats.entries == len(self.order) == len(self.cache)
        assert all(k in self.cache for k in self.order)
        assert (stats.hits, stats.misses, stats.evictions) == (
            self.hits,
            self.misses,
            self.evictions,
        )


LruModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, database=None)
TestLruModel = LruModel.TestCase


# --- MemoryBudget -----------------------------------------------------------------------


def test_budget_gives_sqlite_its_share_and_caches_the_rest() -> None:
    budget = MemoryBudget(100 * 1024 * 1024)
    assert budget.sqlite_bytes == int(100 * 1024 * 1024 * MemoryBudget.SQLITE_SHARE)
    cache_share = budget.total_bytes - budget.sqlite_bytes
    assert budget.unallocated_bytes == cache_share
    events = budget.cache("events", 0.5)
    users = budget.cache("users", 0.25)
    assert events.max_bytes == cache_share // 2
    assert users.max_bytes == cache_share // 4
    assert budget.unallocated_bytes == cache_share - events.max_bytes - users.max_bytes
    assert [s.name for s in budget.statistics()] == ["events", "users"]


def test_budget_refuses_over_allocation() -> None:
    budget = MemoryBudget(64 * 1024 * 1024)
    budget.cache("a", 0.6)
    with pytest.raises(ValueError, match="budget"):
        budget.cache("b", 0.5)
    # The refused cache took nothing: what is left still fits.
    budget.cache("b", 0.4)
    with pytest.raises(ValueError, match="budget"):
        budget.cache("c", 1.5)


def test_budget_refuses_duplicate_names() -> None:
    budget = MemoryBudget(64 * 1024 * 1024)
    budget.cache("events", 0.1)
    with pytest.raises(ValueError, match="events"):
        budget.cache("events", 0.1)


def test_fractions_adding_to_one_fit() -> None:
    budget = MemoryBudget(64 * 1024 * 1024)
    caches = [budget.cache(f"c{i}", 0.1) for i in range(10)]
    total = sum(c.max_bytes for c in caches)
    assert total + budget.sqlite_bytes <= budget.total_bytes
    assert budget.unallocated_bytes >= 0


def test_caches_never_add_up_past_the_budget() -> None:
    budget = MemoryBudget(64 * 1024 * 1024)
    caches = []
    for name, fraction in (("a", -0.5), ("b", 1.0), ("c", 0.5)):
        with contextlib.suppress(ValueError):
            caches.append(budget.cache(name, fraction))
    total = sum(max(c.max_bytes, 0) for c in caches)
    assert total + budget.sqlite_bytes <= budget.total_bytes
