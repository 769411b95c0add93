"""Token-bucket rate limits."""

from __future__ import annotations

import pytest

from pocketserver.config import RateLimit
from pocketserver.errors import MatrixError
from pocketserver.ratelimit import RateLimiter


def refused(limiter: RateLimiter, key: str, now: float) -> MatrixError:
    with pytest.raises(MatrixError) as excinfo:
        limiter.check(key, now)
    return excinfo.value


def test_burst_then_refusal_with_retry_after() -> None:
    limiter = RateLimiter(RateLimit(per_second=0.5, burst_count=3))
    for _ in range(3):
        limiter.check("client", now=100.0)
    error = refused(limiter, "client", now=100.0)
    assert error.status == 429
    assert error.errcode == "M_LIMIT_EXCEEDED"
    retry = error.extra["retry_after_ms"]
    assert isinstance(retry, int)
    assert retry > 0
    assert error.to_json()["retry_after_ms"] == retry
    # One request costs 1 / 0.5 = 2 seconds of refill.
    assert retry == 2000


def test_waiting_retry_after_ms_is_enough() -> None:
    limiter = RateLimiter(RateLimit(per_second=0.2, burst_count=1))
    limiter.check("k", now=0.0)
    retry = refused(limiter, "k", now=1.0).extra["retry_after_ms"]
    assert isinstance(retry, int)
    assert retry == 4000
    # A refused request took nothing: the client may come back after retry_after_ms.
    limiter.check("k", now=1.0 + retry / 1000)


def test_refill_over_time() -> None:
    limiter = RateLimiter(RateLimit(per_second=1.0, burst_count=2))
    limiter.check("k", now=10.0)
    limiter.check("k", now=10.0)
    refused(limiter, "k", now=10.5)
    limiter.check("k", now=11.0)  # one token back after a second
    refused(limiter, "k", now=11.0)
    limiter.check("k", now=13.0)
    limiter.check("k", now=13.0)  # two back after two more seconds
    refused(limiter, "k", now=13.0)


def test_refill_never_exceeds_the_burst() -> None:
    limiter = RateLimiter(RateLimit(per_second=10.0, burst_count=3))
    limiter.check("k", now=0.0)
    for _ in range(3):
        limiter.check("k", now=1_000_000.0)
    refused(limiter, "k", now=1_000_000.0)


def test_keys_are_independent() -> None:
    limiter = RateLimiter(RateLimit(per_second=0.1, burst_count=1))
    limiter.check("1.2.3.4", now=0.0)
    refused(limiter, "1.2.3.4", now=0.0)
    limiter.check("5.6.7.8", now=0.0)
    limiter.check(("@alice:example.org", "login"), now=0.0)
    refused(limiter, "5.6.7.8", now=0.0)


def test_cost_and_would_allow() -> None:
    limiter = RateLimiter(RateLimit(per_second=1.0, burst_count=5))
    assert limiter.would_allow("k", now=0.0)
    limiter.check("k", now=0.0, cost=4)
    assert limiter.would_allow("k", now=0.0)
    with pytest.raises(MatrixError):
        limiter.check("k", now=0.0, cost=2)
    limiter.check("k", now=0.0, cost=1)
    assert not limiter.would_allow("k", now=0.0)
    assert limiter.would_allow("k", now=1.0)


def test_record_counts_without_refusing() -> None:
    """Failed logins are recorded; past the limit further attempts are refused."""
    limiter = RateLimiter(RateLimit(per_second=0.5, burst_count=3))
    for _ in range(5):
        limiter.record("@alice:example.org", now=0.0)
    assert not limiter.would_allow("@alice:example.org", now=0.0)
    # Two recorded past the burst are a debt that must be paid off: 3 tokens = 6 s.
    assert not limiter.would_allow("@alice:example.org", now=5.9)
    assert limiter.would_allow("@alice:example.org", now=6.0)


def test_number_of_keys_is_bounded() -> None:
    limiter = RateLimiter(RateLimit(per_second=1.0, burst_count=1), max_keys=50)
    for i in range(1000):
        limiter.check(f"client-{i}", now=0.0)
        assert len(limiter) <= 50
    assert len(limiter) == 50
    # The most recent clients are still remembered.
    refused(limiter, "client-999", now=0.0)


def test_refusals_do_not_add_keys() -> None:
    limiter = RateLimiter(RateLimit(per_second=1.0, burst_count=1), max_keys=10)
    limiter.check("k", now=0.0)
    for _ in range(100):
        refused(limiter, "k", now=0.0)
    assert len(limiter) == 1
